"""Pairs of images for the auxiliary task "are these two the same class?" (siamese pretraining).

Label convention (the book's): **0 = same class, 1 = different class**, so the logistic output of a
siamese network reads as "probability that the two differ". Every epoch draws a fresh, deterministic
stream of pairs from a seed: exactly half same-class and half different-class, in shuffled order.

The pairs come from any :class:`~ltrain.data.ImageClassificationData`. With ``pool="unused"`` they are
built from the images that data module does NOT use (neither its capped train split, nor its val or
test split): the scarce-label setting, where a classifier gets e.g. 100 labelled images per class and
the many other images only serve to make cheap "same or not" pairs. ``pool="all"`` adds the labelled
train split to those; ``pool="train"`` takes the train split only (and its val split for validation).
:class:`UnlabelledData` serves the same pools as plain image batches, for autoencoders and other
self-supervised modules.
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

from ltrain.data.base import ImageClassificationData, TensorImageDataset
from ltrain.data.subsets import select_classes, stratified_split
from ltrain.errors import LtrainError
from ltrain.seeding import Stream, derive_seed

SAME, DIFFERENT = 0, 1
POOLS = ("unused", "all", "train")


def sample_pairs(
    labels: torch.Tensor, num_pairs: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``num_pairs`` index pairs (first, second) into ``labels`` and their targets (0 same, 1 different).

    Exactly ``num_pairs // 2`` pairs are same-class (the odd one out is different-class), shuffled.
    The first image is uniform over all images; the second is uniform over the other images of its
    class (same) or over all images of other classes (different); an image is never paired with itself.
    """
    if num_pairs <= 0:
        raise LtrainError(f"the number of pairs must be positive, got {num_pairs}")
    counts = torch.bincount(labels)
    present = counts[counts > 0]
    if len(present) < 2 or int(present.min()) < 2:
        raise LtrainError(
            f"pairs need at least 2 classes with at least 2 images each; got class sizes {counts.tolist()}"
        )
    order = torch.argsort(labels, stable=True)  # images sorted by class: each class is one block
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))  # position of each image in the sorted order

    n_same = num_pairs // 2
    first = torch.randint(len(labels), (num_pairs,), generator=generator)
    c = labels[first]
    size, start = counts[c], starts[c]
    u = torch.rand(num_pairs, generator=generator)
    # same: step 1..size-1 places forward inside the class block, wrapping round (never the image itself)
    step = 1 + (u[:n_same] * (size[:n_same] - 1)).long().clamp_max(size[:n_same] - 2)
    same_pos = start[:n_same] + (rank[first[:n_same]] - start[:n_same] + step) % size[:n_same]
    # different: a uniform position among the images outside the class block
    others = len(labels) - size[n_same:]
    r = (u[n_same:] * others).long().clamp_max(others - 1)
    diff_pos = torch.where(r < start[n_same:], r, r + size[n_same:])
    second = order[torch.cat([same_pos, diff_pos])]
    target = torch.cat([torch.full((n_same,), SAME), torch.full((num_pairs - n_same,), DIFFERENT)])
    shuffle = torch.randperm(num_pairs, generator=generator)
    return first[shuffle], second[shuffle], target[shuffle]


def pool_images(
    source: ImageClassificationData, pool: str, val_fraction: float = 0.1, seed: int = 0
) -> tuple[dict[str, TensorImageDataset], dict[str, torch.Tensor]]:
    """The pretraining images drawn from ``source``: ``({"train": ..., "val": ...}, their indices)``.

    pool="unused": the source's images outside all its splits (disjoint from its labelled train, val and
    test images); "all": those plus its train split (every image but its val and test splits); "train":
    its train and val splits as they are. For "unused"/"all", ``val_fraction`` of the pool (per class,
    seeded) is kept for validation. Indices are positions in the source's (class-selected) train
    arrays, comparable with ``source.split_indices``. Images get the source's eval transform, so they are
    standardised exactly as the classifier that will reuse the encoder sees its inputs.
    """
    if pool not in POOLS:
        raise LtrainError(f"pool={pool!r} is not one of {list(POOLS)}")
    source.setup()
    if pool == "train":
        return (
            {"train": source.splits["train"], "val": source.splits["val"]},
            {k: source.split_indices[k] for k in ("train", "val")},
        )
    arrays = _train_arrays(source)
    keep, labels = select_classes(arrays.train_y, source.classes)
    images = arrays.train_x[keep]
    excluded = [v for k, v in source.split_indices.items() if pool == "unused" or k != "train"]
    free = torch.ones(len(labels), dtype=torch.bool)
    free[torch.cat(excluded)] = False
    candidates = torch.nonzero(free).flatten()
    if len(candidates) < 4:
        raise LtrainError(
            f"{source.name} leaves only {len(candidates)} images outside its splits for pool={pool!r}: "
            "cap its train split (data.train_per_class) or use pool='train'"
        )
    train_part, val_part = stratified_split(labels[candidates], [1.0, val_fraction], seed)
    transform = source.splits["val"].transform
    indices = {"train": candidates[train_part], "val": candidates[val_part]}
    return {k: TensorImageDataset(images[idx], labels[idx], transform) for k, idx in indices.items()}, indices


def _train_arrays(source: ImageClassificationData):
    """The source's arrays, loaded once per source (its setup keeps only its splits; pools need the rest)."""
    cached = getattr(source, "_pool_arrays", None)
    if cached is None:
        cached = source.load_arrays()
        source._pool_arrays = cached
    return cached


class UnlabelledData(L.LightningDataModule):
    """Batches ``(x, y)`` of a pretraining pool of ``source`` (see :func:`pool_images`); modules ignore ``y``."""

    def __init__(
        self,
        source: ImageClassificationData,
        pool: str = "all",
        val_fraction: float = 0.05,
        seed: int = 0,
        batch_size: int = 256,
        eval_batch_size: int = 512,
        num_workers: int = 0,
    ):
        super().__init__()
        self.source, self.pool, self.val_fraction, self.seed = source, pool, val_fraction, seed
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.images: dict[str, TensorImageDataset] = {}
        self.pool_indices: dict[str, torch.Tensor] = {}
        self.inputs: dict[str, TensorDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if not self.images:
            self.images, self.pool_indices = pool_images(self.source, self.pool, self.val_fraction, self.seed)
            # the transform is deterministic: apply it once, not once per epoch
            self.inputs = {
                k: TensorDataset(torch.stack([ds.transform(im) for im in ds.images]), ds.labels)
                for k, ds in self.images.items()
            }

    def describe(self) -> dict:
        self.setup()
        return {
            "source": self.source.describe(),
            "pool": self.pool,
            "pool_sizes": {k: len(v) for k, v in self.images.items()},
            "seed": self.seed,
        }

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(
            self.inputs["train"], batch_size=self.batch_size, shuffle=True, drop_last=True, num_workers=self.num_workers
        )

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(self.inputs["val"], batch_size=self.eval_batch_size, num_workers=self.num_workers)


class PairSampler(Sampler):
    """Yields ``(i, j, target)`` triples for :class:`PairDataset`: a fresh seeded draw every epoch.

    Lightning calls ``set_epoch`` at each epoch start, so epoch ``e`` always gets the same pairs for the
    same seed (reproducible and resumable), and different epochs get different pairs. ``fixed=True``
    ignores the epoch (validation pairs stay the same all run).
    """

    def __init__(self, labels: torch.Tensor, num_pairs: int, seed: int = 0, fixed: bool = False):
        self.labels, self.num_pairs, self.seed, self.fixed = labels, int(num_pairs), int(seed), fixed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def pairs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This epoch's (first, second, target) index tensors."""
        epoch = 0 if self.fixed else self.epoch
        gen = torch.Generator().manual_seed(derive_seed(Stream.PAIRS, self.seed, epoch))
        return sample_pairs(self.labels, self.num_pairs, gen)

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        first, second, target = self.pairs()
        return iter(zip(first.tolist(), second.tolist(), target.tolist(), strict=True))

    def __len__(self) -> int:
        return self.num_pairs


class PairDataset(Dataset):
    """Indexed by ``(i, j, target)`` (from :class:`PairSampler`): returns ``(x_i, x_j, target as float)``.

    The images' transform must be deterministic; it is applied once to every image up front, because
    each image appears in many pairs per epoch.
    """

    def __init__(self, images: TensorImageDataset):
        if not images.transform.deterministic:
            raise LtrainError("pair images need a deterministic transform (augment=none)")
        self.inputs = torch.stack([images.transform(img) for img in images.images])

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        i, j, target = key
        return self.inputs[i], self.inputs[j], torch.tensor(float(target))


class PairData(L.LightningDataModule):
    """Pairs of images from a labelled data module; batches are ``(x_a, x_b, target)`` with 0 = same class.

    Args:
        source: the labelled data module (its eval transform is applied to the pair images, so the
            pretrained encoder sees inputs standardised exactly as the classifier that reuses it will).
        pool: where the images come from (see :func:`pool_images`): "unused", "all" or "train".
        pairs_per_epoch: training pairs drawn per epoch (half same, half different).
        val_pairs: validation pairs (a fixed draw).
        val_fraction: with pool="unused", the share of the pool kept apart for validation pairs.
        seed: seed of the pair stream (and of the pool's val split).
    """

    def __init__(
        self,
        source: ImageClassificationData,
        pool: str = "unused",
        pairs_per_epoch: int = 20_000,
        val_pairs: int = 2_000,
        val_fraction: float = 0.1,
        seed: int = 0,
        batch_size: int = 128,
        eval_batch_size: int = 512,
        num_workers: int = 0,
    ):
        super().__init__()
        if pool not in POOLS:
            raise LtrainError(f"pairs pool={pool!r} is not one of {list(POOLS)}")
        self.source, self.pool = source, pool
        self.pairs_per_epoch, self.val_pairs, self.val_fraction = pairs_per_epoch, val_pairs, val_fraction
        self.seed, self.batch_size, self.eval_batch_size, self.num_workers = (
            seed,
            batch_size,
            eval_batch_size,
            num_workers,
        )
        self.images: dict[str, TensorImageDataset] = {}
        self.datasets: dict[str, PairDataset] = {}
        self.pool_indices: dict[str, torch.Tensor] = {}

    def setup(self, stage: str | None = None) -> None:
        if not self.images:
            self.images, self.pool_indices = pool_images(self.source, self.pool, self.val_fraction, self.seed)

    def describe(self) -> dict:
        """Where the pairs come from: the source, the pool and its sizes (for zoo lineage and results)."""
        self.setup()
        return {
            "source": self.source.describe(),
            "pool": self.pool,
            "pool_sizes": {k: len(v) for k, v in self.images.items()},
            "pairs_per_epoch": self.pairs_per_epoch,
            "val_pairs": self.val_pairs,
            "seed": self.seed,
            "label_convention": "0 = same class, 1 = different class",
        }

    def train_dataloader(self) -> DataLoader:
        self.setup()
        sampler = PairSampler(self.images["train"].labels, self.pairs_per_epoch, self.seed)
        return DataLoader(
            self._dataset("train"), batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers
        )

    def val_dataloader(self) -> DataLoader:
        self.setup()
        sampler = PairSampler(
            self.images["val"].labels, self.val_pairs, derive_seed(Stream.VAL_PAIRS, self.seed), fixed=True
        )
        return DataLoader(
            self._dataset("val"), batch_size=self.eval_batch_size, sampler=sampler, num_workers=self.num_workers
        )

    def _dataset(self, split: str) -> PairDataset:
        if split not in self.datasets:
            self.datasets[split] = PairDataset(self.images[split])
        return self.datasets[split]
