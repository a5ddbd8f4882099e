"""MNIST, Fashion-MNIST and CIFAR-10 through torchvision's downloaders, for users with internet."""

from __future__ import annotations

import os

import numpy as np
import torch

from ltrain.data.base import Arrays, ImageClassificationData
from ltrain.errors import LtrainError

_SETS = ("mnist", "fashion_mnist", "cifar10")


def default_data_root() -> str:
    return os.environ.get("LTRAIN_DATA", os.path.join(os.path.expanduser("~"), ".cache", "ltrain", "data"))


class TorchvisionData(ImageClassificationData):
    """A torchvision dataset (official train/test split) downloaded into ``root`` on first use."""

    def __init__(self, dataset: str, root: str | None = None, download: bool = True, **kwargs):
        if dataset not in _SETS:
            raise LtrainError(f"data.dataset={dataset!r} is not one of {list(_SETS)}")
        kwargs.setdefault("test_fraction", 0.0)
        super().__init__(**kwargs)
        self.dataset = dataset
        self.root = root or default_data_root()
        self.download = download

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.dataset

    def _load(self, train: bool):
        from torchvision import datasets

        cls = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST, "cifar10": datasets.CIFAR10}[
            self.dataset
        ]
        try:
            return cls(self.root, train=train, download=self.download)
        except Exception as e:  # network errors come in many types
            raise LtrainError(
                f"could not load {self.dataset} into {self.root} ({type(e).__name__}: {e}).\n"
                "  It needs internet on first use (or the files already in data.root).\n"
                "  Offline alternatives: data=mnist_embedded (5,000 real digits, pip only) or\n"
                "  data=fashion_mnist (apt-get install dataset-fashion-mnist)"
            ) from e

    def prepare_data(self) -> None:
        self._load(True)
        self._load(False)

    def load_arrays(self) -> Arrays:
        parts = []
        for train in (True, False):
            ds = self._load(train)
            x = torch.as_tensor(np.asarray(ds.data))
            x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)  # (N, H, W[, C]) -> (N, C, H, W)
            parts += [x.contiguous(), torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)]
        return Arrays(*parts, class_names=list(ds.classes))
