"""What the feature cache stores and how loaders read it: features per example, keyed, in memory or on disk.

- :class:`CachedFeatures`: the prefix outputs of one split on one rank — the global example indices it
  covers, their labels, and ``views`` feature tensors (one unless augmented views were asked for).
- :func:`cache_key`: sha256 of everything the features depend on (frozen weights, data, split, transform,
  cut, shard), so a stale file is never read: a different key is a different file.
- :func:`save_features` / :func:`load_features`: one safetensors file per (key, split, rank), written
  atomically; a rank reads only its own file.
- :class:`SwitchableDataset`: what the cache's DataLoaders hold — the cached features of example ``i``
  while the cache is live, the original dataset's item once it is dropped (same indices, same sampler).
- :class:`ShardShuffleSampler`: under DDP, a rank keeps the SAME examples every epoch (so it caches only
  those) and reshuffles them each epoch from (seed, epoch).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, DistributedSampler

from ltrain.io import atomic_write_bytes
from ltrain.seeding import Stream, derive_seed

FORMAT = 2  # bump when the file layout changes: old files then simply miss (2: sha256 of the tensors)


@dataclass
class CachedFeatures:
    """Prefix outputs of the examples ``indices`` (global dataset indices), ``features[v][row]`` per view."""

    indices: torch.Tensor  # (S,) int64, sorted
    labels: torch.Tensor  # (S,)
    features: torch.Tensor  # (V, S, *feature_shape)

    def __post_init__(self) -> None:
        self.row_of = {int(i): r for r, i in enumerate(self.indices.tolist())}

    @property
    def nbytes(self) -> int:
        return self.features.numel() * self.features.element_size()


def cache_key(parts: dict[str, Any], state: dict[str, torch.Tensor]) -> str:
    """sha256 of ``parts`` (JSON) and of every tensor in ``state`` (name, dtype, shape, bytes)."""
    h = hashlib.sha256(json.dumps({"format": FORMAT, **parts}, sort_keys=True, default=str).encode())
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def cache_file(directory: Path, key: str, split: str, rank: int, world_size: int) -> Path:
    return directory / key[:24] / f"{split}-rank{rank}of{world_size}.safetensors"


TENSORS = ("indices", "labels", "features")


def _tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of the file's tensors: safetensors checks the header, not the data, so flipped bytes would load."""
    h = hashlib.sha256()
    for name in TENSORS:
        t = tensors[name].contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_features(path: Path, cached: CachedFeatures, key: str) -> None:
    from safetensors.torch import save

    tensors = {name: getattr(cached, name).contiguous() for name in TENSORS}
    data = save(tensors, metadata={"key": key, "sha256": _tensors_digest(tensors)})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)


def load_features(path: Path, key: str, indices: torch.Tensor) -> CachedFeatures | None:
    """The file's features if it exists, carries ``key`` and covers exactly ``indices``; else None.

    A damaged file (unreadable, or its tensors not matching the sha256 it was written with) is a cache
    miss too, so it is recomputed and replaced; a warning names it (on every rank: each reads its own file).
    """
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            if metadata.get("key") != key:
                return None
            tensors = {k: f.get_tensor(k) for k in TENSORS}
    except Exception as e:  # safetensors raises several types for a truncated or garbled file
        return _damaged(path, f"{type(e).__name__}: {e}")
    if metadata.get("sha256") != _tensors_digest(tensors):
        return _damaged(path, "its tensors do not match the sha256 they were written with")
    if not torch.equal(tensors["indices"], indices):
        return None
    return CachedFeatures(**tensors)


def _damaged(path: Path, why: str) -> None:
    warnings.warn(f"FrozenFeatureCache: the cache file {path} is damaged ({why}); recomputing it", stacklevel=3)


class SwitchableDataset(Dataset):
    """Example ``i`` as (cached features, label) while ``cached`` is set, else ``dataset[i]`` unchanged.

    ``set_epoch`` is passed on to the wrapped dataset (its augmentations) and picks the view of the
    epoch when several augmented views were cached (epoch e reads view e mod V).
    """

    def __init__(self, dataset: Dataset, cached: CachedFeatures | None):
        self.dataset, self.cached, self.epoch = dataset, cached, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:
        cached = self.cached
        if cached is None:
            return self.dataset[i]
        row = cached.row_of.get(int(i))
        if row is None:
            raise IndexError(
                f"example {i} is not in this rank's feature cache (its shard has {len(cached.row_of)} "
                "examples): the loader's sampler changed after the cache was built"
            )
        return cached.features[self.epoch % cached.features.shape[0], row], cached.labels[row]


class ShardShuffleSampler(DistributedSampler):
    """A fixed shard per rank (the first epoch's DistributedSampler shard), reshuffled every epoch.

    torch's DistributedSampler deals a new shard to every rank each epoch, so a rank would need every
    example's features; with this sampler a rank sees the same examples every epoch, so it caches
    only those. Being a DistributedSampler, Lightning keeps it (does not inject its own) and calls
    ``set_epoch``.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int, shuffle: bool = True):
        seed %= 2**62  # torch.initial_seed() may use all 64 bits; DistributedSampler adds the epoch to it
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.shard = list(super().__iter__())  # epoch 0 of the plain DistributedSampler
        self.on_iter: Any = None  # called when an epoch's indices are first drawn (FrozenFeatureCache)

    def __iter__(self):
        if self.on_iter is not None:
            self.on_iter()
        if not self.shuffle:
            return iter(self.shard)
        gen = torch.Generator().manual_seed(derive_seed(Stream.SHARD_ORDER, self.seed, self.epoch, self.rank))
        return iter([self.shard[j] for j in torch.randperm(len(self.shard), generator=gen).tolist()])
