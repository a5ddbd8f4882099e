"""The base DataModule: images held as uint8 tensors, split, subset, capped and standardised the same way.

Every dataset ltrain ships (embedded MNIST, Fashion-MNIST IDX files, torchvision sets, image folders)
only says how to load its arrays; splitting, class subsets, caps, resizing and standardisation live here
once, so that a recipe behaves the same whatever the data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from ltrain.data.subsets import cap_per_class, select_classes, stratified_split
from ltrain.errors import LtrainError
from ltrain.seeding import Stream, derive_seed

AUGMENTATIONS = ("none", "flip_crop")


@dataclass(frozen=True)
class ImageTransform:
    """uint8 CHW image -> standardised float CHW tensor, optionally resized, recoloured and augmented.

    ``deterministic`` tells callers (e.g. a feature cache) whether the same input always gives the same
    output; ``repr`` is stable and names every setting, so it can be part of a cache key.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: int | None = None
    channels: int | None = None
    augment: str = "none"

    @property
    def deterministic(self) -> bool:
        return self.augment == "none"

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = image.float().div_(255.0)
        x = _match_channels(x, self.channels)
        if self.size is not None and x.shape[-1] != self.size:
            x = F.interpolate(x[None], size=(self.size, self.size), mode="bilinear", align_corners=False)[0]
        mean = torch.tensor(self.mean).view(-1, 1, 1)
        std = torch.tensor(self.std).view(-1, 1, 1)
        x = (x - mean) / std
        if self.augment == "flip_crop":
            x = _flip_crop(x, generator)
        return x


def _match_channels(x: torch.Tensor, channels: int | None) -> torch.Tensor:
    if channels is None or x.shape[0] == channels:
        return x
    if x.shape[0] == 1:
        return x.expand(channels, *x.shape[1:]).contiguous()
    if channels == 1:
        return x.mean(0, keepdim=True)
    raise LtrainError(f"cannot turn {x.shape[0]}-channel images into {channels} channels; set data.channels=null or 1")


def _flip_crop(x: torch.Tensor, generator: torch.Generator | None, pad: int = 4) -> torch.Tensor:
    """Random horizontal flip and a random crop after zero padding."""
    if torch.rand((), generator=generator) < 0.5:
        x = x.flip(-1)
    h, w = x.shape[-2:]
    padded = F.pad(x, (pad, pad, pad, pad))
    i, j = torch.randint(0, 2 * pad + 1, (2,), generator=generator).tolist()
    return padded[:, i : i + h, j : j + w]


class TensorImageDataset(Dataset):
    """(image, label) pairs from a uint8 image tensor (N, C, H, W), a label tensor and a transform.

    A random augmentation of example ``i`` in epoch ``e`` draws from a generator seeded with
    (seed, e, i): the same in a resumed run as in an uninterrupted one, and independent of how many
    random numbers anything else drew. ``set_epoch`` is called by the EpochSeed callback.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: ImageTransform, seed: int = 0):
        self.images, self.labels, self.transform = images, labels, transform
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.transform.deterministic:
            return self.transform(self.images[i]), self.labels[i]
        gen = torch.Generator().manual_seed(derive_seed(Stream.AUGMENT, self.seed, self.epoch, i))
        return self.transform(self.images[i], gen), self.labels[i]


class EpochShuffleSampler(Sampler[int]):
    """A random order that depends only on (seed, epoch), so a run resumed mid-way sees the same batches.

    torch's RandomSampler draws its order from the global RNG, which a Lightning checkpoint does not
    restore; Lightning calls ``set_epoch`` on any sampler that has it, as it does for DistributedSampler.
    """

    def __init__(self, length: int, seed: int):
        self.length, self.seed, self.epoch = length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        gen = torch.Generator().manual_seed(derive_seed(Stream.EPOCH_ORDER, self.seed, self.epoch))
        return iter(torch.randperm(self.length, generator=gen).tolist())


@dataclass
class Arrays:
    """What a dataset loads: train images/labels and, when the dataset has one, its official test split."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor | None = None
    test_y: torch.Tensor | None = None
    class_names: list[str] | None = None


class ImageClassificationData(L.LightningDataModule):
    """Split, subset, cap, resize and standardise an image classification dataset.

    Args:
        classes: keep only these original class ids, relabelled 0..k-1 in the given order (None: all).
        train_per_class: keep at most this many training examples per class (e.g. 100 per digit).
        val_fraction: fraction of each class's non-test examples held out for validation.
        test_fraction: fraction held out for testing when the dataset has no official test split.
        test_per_class: test on at most this many examples per class (a seeded choice with ``split_seed``);
            None tests on the whole test split. A smaller, still balanced test set for slow models.
        split_seed: seed of the split; kept apart from the training seed so that seeds vary training,
            not the held-out examples.
        image_size: resize to this square size (timm CNNs want more than 28 pixels); None keeps the size.
        channels: repeat grey images to 3 channels (or average colour to 1); None keeps them.
        standardize: subtract the train split's per-channel mean, divide by its std.
        augment: "none" or "flip_crop" (training only).
    """

    def __init__(
        self,
        classes: list[int] | None = None,
        train_per_class: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        test_per_class: int | None = None,
        split_seed: int = 0,
        image_size: int | None = None,
        channels: int | None = None,
        standardize: bool = True,
        augment: str = "none",
        batch_size: int = 128,
        eval_batch_size: int = 512,
        num_workers: int = 0,
    ):
        super().__init__()
        if augment not in AUGMENTATIONS:
            raise LtrainError(f"data.augment={augment!r} is not one of {list(AUGMENTATIONS)}")
        if batch_size <= 0:
            raise LtrainError(f"data.batch_size must be positive, got {batch_size}")
        self.classes = list(classes) if classes is not None else None
        self.train_per_class = train_per_class
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.test_per_class = test_per_class
        self.split_seed = split_seed
        self.image_size = image_size
        self.channels = channels
        self.standardize = standardize
        self.augment = augment
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.train_drop_last = False  # True: drop the last incomplete training batch (set by ltrain for mixup)
        self.splits: dict[str, TensorImageDataset] = {}
        self._content: str | None = None
        self.split_indices: dict[str, torch.Tensor] = {}
        self.class_names: list[str] = []

    # --- what a dataset provides -------------------------------------------------------------------
    def load_arrays(self) -> Arrays:
        """Load the dataset's images as uint8 (N, C, H, W) and labels as int64."""
        raise NotImplementedError

    @property
    def name(self) -> str:
        return type(self).__name__

    # --- derived --------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        self.setup()
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of what the model receives."""
        self.setup()
        return tuple(self.splits["train"][0][0].shape)  # type: ignore[return-value]

    def describe(self) -> dict[str, Any]:
        """A stable description of the data (name, classes, split, transform): for cache keys and zoo entries."""
        self.setup()
        return {
            "dataset": self.name,
            "classes": self.classes,
            "class_names": self.class_names,
            "train_per_class": self.train_per_class,
            "split_seed": self.split_seed,
            "sizes": {k: len(v) for k, v in self.splits.items()},
            "transform": repr(self.splits["val"].transform),
            "content": self.content_digest(),
        }

    def content_digest(self) -> str:
        """sha256 of every split's pixels and labels: two datasets with one description but other images (swapped
        class folders, ``standardize=false``) must never share a feature-cache key or pass for one another."""
        if self._content is None:
            h = hashlib.sha256()
            for name in sorted(self.splits):
                ds = self.splits[name]
                for t in (ds.images, ds.labels):
                    h.update(name.encode() + str(tuple(t.shape)).encode() + str(t.dtype).encode())
                    h.update(t.contiguous().numpy().tobytes())
            self._content = h.hexdigest()
        return self._content

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        arrays = self.load_arrays()
        keep, labels = select_classes(arrays.train_y, self.classes)
        images = arrays.train_x[keep]
        names = arrays.class_names or [str(c) for c in range(int(arrays.train_y.max()) + 1)]
        self.class_names = [names[c] for c in self.classes] if self.classes else names
        if arrays.test_x is not None:
            t_keep, test_y = select_classes(arrays.test_y, self.classes)
            test_x = arrays.test_x[t_keep]
            train_idx, val_idx, test_idx = self.split_examples(labels, len(test_y))
        else:
            train_idx, val_idx, test_idx = self.split_examples(labels)
            test_x, test_y = images[test_idx], labels[test_idx]
        kept = self.test_subset(test_y)
        test_x, test_y = test_x[kept], test_y[kept]
        mean, std = channel_stats(_match_channels_batch(images[train_idx], self.channels), self.standardize)
        common = {"mean": mean, "std": std, "size": self.image_size, "channels": self.channels}
        train_tf = ImageTransform(**common, augment=self.augment)
        eval_tf = ImageTransform(**common)
        self.splits = {
            "train": TensorImageDataset(images[train_idx], labels[train_idx], train_tf),
            "val": TensorImageDataset(images[val_idx], labels[val_idx], eval_tf),
            "test": TensorImageDataset(test_x, test_y, eval_tf),
        }

    def split_examples(self, labels: torch.Tensor, official_test: int | None = None):
        """(train, val, test) indices into ``labels``: stratified with ``split_seed``, train capped per class.

        With an official test split (``official_test`` examples) nothing is held out for testing here and
        ``test`` is None. Also records ``split_indices``.
        """
        if official_test is not None:
            train_idx, val_idx = stratified_split(labels, [1.0, self.val_fraction], self.split_seed)
            test_idx, n_test = None, official_test
        else:
            train_idx, val_idx, test_idx = stratified_split(
                labels, [1.0, self.val_fraction, self.test_fraction], self.split_seed
            )
            n_test = len(test_idx)
        train_idx = cap_per_class(train_idx, labels, self.train_per_class, self.split_seed)
        if len(train_idx) == 0 or len(val_idx) == 0 or n_test == 0:
            raise LtrainError(
                f"the split is empty (train {len(train_idx)}, val {len(val_idx)}, test {n_test}): "
                "use more data or larger data.val_fraction / data.test_fraction"
            )
        self.split_indices = {"train": train_idx, "val": val_idx}
        if test_idx is not None:
            self.split_indices["test"] = test_idx
        return train_idx, val_idx, test_idx

    def test_subset(self, test_labels: torch.Tensor) -> torch.Tensor:
        """Indices of the test examples kept: all, or ``test_per_class`` of each class chosen with ``split_seed``
        (the same for every training seed, so every arm and seed is tested on the same images)."""
        if self.test_per_class is None:
            return torch.arange(len(test_labels))
        if self.test_per_class <= 0:
            raise LtrainError(f"data.test_per_class must be positive or null, got {self.test_per_class}")
        gen = torch.Generator().manual_seed(derive_seed(Stream.CLASS_CAP, self.split_seed, 1))  # 1: the test cap
        kept = []
        for c in test_labels.unique(sorted=True).tolist():
            idx = torch.nonzero(test_labels == c).flatten()
            if len(idx) < self.test_per_class:
                raise LtrainError(
                    f"data.test_per_class={self.test_per_class}, but class {c} has only {len(idx)} test examples; "
                    "lower it or set it to null (the whole test split)"
                )
            kept.append(idx[torch.randperm(len(idx), generator=gen)[: self.test_per_class]])
        return torch.sort(torch.cat(kept))[0]

    # --- loaders --------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        """Shuffled per epoch from the run's seed; under DDP Lightning's DistributedSampler does the same."""
        self.setup()
        train = self.splits["train"]
        train.seed = torch.initial_seed()
        distributed = self.trainer is not None and self.trainer.world_size > 1
        sampler = None if distributed else EpochShuffleSampler(len(train), train.seed)
        return DataLoader(
            train,
            batch_size=self.batch_size,
            shuffle=distributed,
            sampler=sampler,
            num_workers=self.num_workers,
            drop_last=self.train_drop_last,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def _eval_loader(self, split: str) -> DataLoader:
        self.setup()
        return DataLoader(
            self.splits[split], batch_size=self.eval_batch_size, shuffle=False, num_workers=self.num_workers
        )


def _match_channels_batch(images: torch.Tensor, channels: int | None) -> torch.Tensor:
    if channels is None or images.shape[1] == channels:
        return images
    if images.shape[1] == 1:
        return images.expand(-1, channels, -1, -1)
    return images.float().mean(1, keepdim=True)


def channel_stats(images: torch.Tensor, standardize: bool) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images scaled to [0, 1] (identity stats when not standardising)."""
    c = images.shape[1]
    if not standardize:
        return (0.0,) * c, (1.0,) * c
    x = images.float().div(255.0).transpose(0, 1).reshape(c, -1)
    std = x.std(dim=1).clamp_min(1e-6)
    return tuple(round(v, 6) for v in x.mean(dim=1).tolist()), tuple(round(v, 6) for v in std.tolist())
