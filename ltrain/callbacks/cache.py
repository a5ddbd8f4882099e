"""FrozenFeatureCache: run the frozen bottom of a network once per example, train the top from its outputs.

Frozen layers do not change, so the output of the topmost frozen layer group is the same every epoch:
compute it once (train and val splits), then let every step run only the trainable top. What it adds to
Lightning (which has no such callback) and why it is built this way:

- **Exact or refused.** The cut is found from ``requires_grad`` (set by :class:`FreezeSchedule` or by hand)
  and proven on a probe batch (:func:`ltrain.models.split.split_model`); the frozen part runs in eval mode
  (BN on running statistics, as FreezeSchedule keeps frozen BN); a random augmentation, a random layer
  in the frozen part or ``FreezeSchedule(bn="train")`` is refused with the reason.
- **Same batches.** While it is live the DataModule's train/val loaders are the originals' twins over a
  :class:`SwitchableDataset` — same sampler object, batch size, collate — yielding example ``i``'s features
  instead of its image; the network's ``forward`` is replaced (on the instance, so its ``state_dict`` and
  checkpoints are untouched) by the suffix. Dropping the cache flips both back: the same loaders then
  yield images again, and ``forward`` is the model's own.
- **Dropped when it goes stale.** At each epoch start (after FreezeSchedule has applied its phase) a
  trainable parameter below the cut drops the cache for the rest of the run.
- **Keyed, opt-in reuse.** ``storage="disk"`` writes one safetensors file per (key, split, rank); with
  ``reuse=True`` a later run with the same key (frozen weights, data description, split, transform, cut,
  shard) reads it; any difference is another key, hence a recompute.
- **DDP.** Each rank caches only the examples its sampler gives it: the train loader gets a
  :class:`ShardShuffleSampler` (a fixed shard per rank, reshuffled each epoch), the val loader
  torch's DistributedSampler shard; a rank only ever reads its own file.

Example::

    trainer = L.Trainer(callbacks=[FreezeSchedule([{"trainable": "head"}]), FrozenFeatureCache()])
    trainer.fit(module, datamodule=dm)   # FrozenFeatureCache must come after FreezeSchedule
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ltrain.callbacks.cache_data import (
    CachedFeatures,
    ShardShuffleSampler,
    SwitchableDataset,
    cache_file,
    cache_key,
    load_features,
    save_features,
)
from ltrain.callbacks.network import find_network
from ltrain.errors import LtrainError
from ltrain.models.split import ModelSplit, eval_mode, split_model

STORAGES = ("memory", "disk")
SPLITS = {"train": "train_dataloader", "val": "val_dataloader"}


def default_cache_dir() -> Path:
    """Where reusable caches live: ``$LTRAIN_CACHE/features`` (default ``~/.cache/ltrain/features``)."""
    return Path(os.environ.get("LTRAIN_CACHE", Path.home() / ".cache" / "ltrain")) / "features"


class FrozenFeatureCache(Callback):
    """Cache the output of the topmost frozen layer group and train the layers above it from the cache.

    Args:
        storage: "memory" (tensors held by the process) or "disk" (also written as safetensors files).
        directory: where "disk" writes; default ``<run dir>/feature_cache``, or ``$LTRAIN_CACHE/features``
            with ``reuse``.
        reuse: read a cache file a previous run wrote with the same key instead of recomputing (disk only).
        max_gb: refuse to start when this rank's features would take more than this many GB.
        views: with a random training augmentation, precompute this many augmented views per example
            (epoch e trains on view e mod views); None refuses random augmentations.
        batch_size: batch size of the precomputation (default: the DataModule's ``eval_batch_size`` or 256).
        model_attr: the LightningModule attribute holding the network (None: the module itself).
    """

    def __init__(
        self,
        storage: str = "memory",
        directory: str | None = None,
        reuse: bool = False,
        max_gb: float = 4.0,
        views: int | None = None,
        batch_size: int | None = None,
        model_attr: str | None = "model",
    ):
        if storage not in STORAGES:
            raise LtrainError(f"cache.storage={storage!r} is not one of {list(STORAGES)}")
        if reuse and storage != "disk":
            raise LtrainError("cache.reuse=true reads files a previous run wrote: set cache.storage=disk")
        if views is not None and views < 1:
            raise LtrainError(f"cache.views={views} must be a positive number of augmented views (or null)")
        if max_gb <= 0:
            raise LtrainError(f"cache.max_gb={max_gb} must be positive")
        self.storage, self.directory, self.reuse = storage, directory, reuse
        self.max_gb, self.views, self.batch_size, self.model_attr = max_gb, views, batch_size, model_attr
        self.split: ModelSplit | None = None
        self.cached: dict[str, CachedFeatures] = {}
        self.sources: dict[str, str] = {}  # split -> "computed" | path read
        self.files: dict[str, Path] = {}  # split -> this rank's file (disk storage)
        self.dropped_at_epoch: int | None = None
        self._datamodule: Any = None
        self._datasets: dict[str, Dataset] = {}
        self._samplers: dict[str, Any] = {}
        self._switches: list[SwitchableDataset] = []
        self._model: nn.Module | None = None

    @property
    def live(self) -> bool:
        """True while training runs from the cache."""
        return self.split is not None

    # ---- Lightning hooks ------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        _check_callback_order(trainer, self)
        dm = trainer.datamodule
        if dm is None:
            raise LtrainError(
                "FrozenFeatureCache serves the loaders of a LightningDataModule: call "
                "trainer.fit(module, datamodule=dm), not fit(module, train_dataloaders=...)"
            )
        self._datamodule = dm
        originals = {split: getattr(dm, hook) for split, hook in SPLITS.items()}
        for split, hook in SPLITS.items():
            setattr(dm, hook, lambda split=split, original=originals[split]: self._loader(split, original()))
        self._originals = originals

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = self._find_model(pl_module)
        self._datasets = {split: original().dataset for split, original in self._originals.items()}
        probe = torch.stack([self._datasets["val"][i][0] for i in range(min(8, len(self._datasets["val"])))])
        split = split_model(model, probe.to(pl_module.device))
        if split is None:
            rank_zero_info("FrozenFeatureCache: no frozen layer group below the trainable ones; training uncached")
            return
        for name, ds in self._datasets.items():
            _check_deterministic(ds, name, self.views if name == "train" else None)
        indices = self._shards(trainer)
        views = {"train": self.views or 1, "val": 1}
        with torch.no_grad(), eval_mode(model):
            per_example = split.prefix(probe[:1].to(pl_module.device))[0]
        total = per_example.numel() * per_example.element_size() * sum(views[s] * len(i) for s, i in indices.items())
        rank_zero_info(
            f"FrozenFeatureCache: caching the output of {split.cut!r} {tuple(per_example.shape)} "
            f"for {len(indices['train'])} train x {views['train']} view(s) + {len(indices['val'])} val "
            f"examples per rank: {total / 2**20:.1f} MiB ({self.storage})"
        )
        if total > self.max_gb * 2**30:
            raise LtrainError(
                f"the feature cache would take {total / 2**30:.2f} GB per rank, over cache.max_gb="
                f"{self.max_gb}: raise cache.max_gb, cache fewer views, or drop the cache option"
            )
        if self.views and self.views > 1:
            rank_zero_info(
                f"FrozenFeatureCache: {self.views} precomputed augmented views per example; epoch e "
                f"trains on view e mod {self.views}, not on a fresh augmentation"
            )
        parts = self._key_parts(split, trainer)
        state = split.prefix_state()
        for name, idx in indices.items():
            key = cache_key(
                {
                    **parts,
                    "split": name,
                    "views": views[name],
                    "indices": _digest(idx),
                    "transform": repr(getattr(self._datasets[name], "transform", None)),
                },
                state,
            )
            self.cached[name] = self._load_or_compute(trainer, split, model, name, idx, views[name], key)
        self.split, self._model = split, model
        model.forward = split.suffix  # the instance attribute shadows the class's forward; del restores it

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for switch in self._switches:
            switch.set_epoch(trainer.current_epoch)  # picks the epoch's view; the dataset's own set_epoch too
        if self.split is None:
            return
        unfrozen = [n for n, p in self.split.prefix_state().items() if isinstance(p, nn.Parameter) and p.requires_grad]
        if unfrozen:
            self._drop()
            self.dropped_at_epoch = trainer.current_epoch
            rank_zero_info(
                f"FrozenFeatureCache: dropped at epoch {trainer.current_epoch}: {unfrozen[0]} (and "
                f"{len(unfrozen) - 1} more) below the cut now train; continuing on the full model"
            )

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    # ---- the work -------------------------------------------------------------------------------
    def _loader(self, split: str, loader: DataLoader) -> DataLoader:
        """The original loader while nothing is cached; else its twin over the cached features."""
        if split not in self.cached:
            return loader
        if not isinstance(loader, DataLoader) or loader.batch_size is None:
            raise LtrainError(
                f"FrozenFeatureCache needs the {split} loader to be a DataLoader with a batch_size "
                f"(got {type(loader).__name__}); drop the cache option"
            )
        switch = SwitchableDataset(loader.dataset, self.cached[split])
        self._switches.append(switch)
        sampler = self._samplers.get(split, loader.sampler)
        return DataLoader(
            switch,
            batch_size=loader.batch_size,
            sampler=sampler,
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            pin_memory=loader.pin_memory,
            drop_last=loader.drop_last,
            worker_init_fn=loader.worker_init_fn,
            generator=loader.generator,
        )

    def _shards(self, trainer: L.Trainer) -> dict[str, torch.Tensor]:
        """The global indices each split's sampler gives this rank (all of them in one process)."""
        world, rank = trainer.world_size, trainer.global_rank
        if world == 1:
            return {s: torch.arange(len(ds)) for s, ds in self._datasets.items()}
        self._samplers = {
            "train": ShardShuffleSampler(self._datasets["train"], world, rank, seed=torch.initial_seed()),
            "val": ShardShuffleSampler(self._datasets["val"], world, rank, seed=0, shuffle=False),
        }
        return {s: torch.tensor(sorted(set(sampler.shard))) for s, sampler in self._samplers.items()}

    def _key_parts(self, split: ModelSplit, trainer: L.Trainer) -> dict[str, Any]:
        dm = self._datamodule
        data = dm.describe() if hasattr(dm, "describe") else type(dm).__name__
        return {
            "data": data,
            "cut": split.cut,
            "model": type(self._find_model(trainer.lightning_module)).__name__,
            "world_size": trainer.world_size,
            "rank": trainer.global_rank,
        }

    def _load_or_compute(
        self,
        trainer: L.Trainer,
        split: ModelSplit,
        model: nn.Module,
        name: str,
        indices: torch.Tensor,
        views: int,
        key: str,
    ) -> CachedFeatures:
        path = None
        if self.storage == "disk":
            directory = (
                Path(self.directory)
                if self.directory
                else (default_cache_dir() if self.reuse else Path(trainer.default_root_dir) / "feature_cache")
            )
            path = cache_file(directory, key, name, trainer.global_rank, trainer.world_size)
            self.files[name] = path
            if self.reuse:
                cached = load_features(path, key, indices)
                if cached is not None:
                    self.sources[name] = str(path)
                    rank_zero_info(f"FrozenFeatureCache: {name} features read from {path}")
                    return cached
        cached = self._compute(split, model, self._datasets[name], indices, views, trainer.current_epoch)
        self.sources[name] = "computed"
        if path is not None:
            save_features(path, cached, key)
        return cached

    def _compute(
        self, split: ModelSplit, model: nn.Module, dataset: Dataset, indices: torch.Tensor, views: int, epoch: int
    ) -> CachedFeatures:
        """Run the prefix (eval mode, no grad) over ``indices`` once per view."""
        device = next(model.parameters()).device
        batch = self.batch_size or getattr(self._datamodule, "eval_batch_size", None) or 256
        per_view, labels = [], []
        with torch.no_grad(), eval_mode(model):
            for view in range(views):
                if views > 1:
                    dataset.set_epoch(view)  # the augmentation epoch `view` of an uncached run would draw
                chunks = []
                for start in range(0, len(indices), batch):
                    items = [dataset[int(i)] for i in indices[start : start + batch]]
                    chunks.append(split.prefix(torch.stack([x for x, _ in items]).to(device)).cpu())
                    if view == 0:
                        labels += [torch.as_tensor(y) for _, y in items]
                per_view.append(torch.cat(chunks))
        if views > 1:
            dataset.set_epoch(epoch)
        return CachedFeatures(indices=indices, labels=torch.stack(labels), features=torch.stack(per_view))

    def _drop(self, free: bool = True) -> None:
        """Loaders back to the original data, the model back to its own forward; ``free`` releases the features."""
        for switch in self._switches:
            switch.cached = None
        if self._model is not None and "forward" in self._model.__dict__:
            del self._model.forward
        self.split = None
        if free:
            self.cached = {}

    def _restore(self) -> None:
        self._drop(free=False)  # at the end of fit the features stay readable (``cached``) until the callback goes
        dm = self._datamodule
        if dm is not None:
            for hook in SPLITS.values():
                dm.__dict__.pop(hook, None)
        self._datamodule, self._switches = None, []

    def _find_model(self, pl_module: L.LightningModule) -> nn.Module:
        return find_network(pl_module, self.model_attr, "FrozenFeatureCache")


def _check_callback_order(trainer: L.Trainer, cache: FrozenFeatureCache) -> None:
    """FreezeSchedule must freeze (fit start) and unfreeze (epoch start) before the cache looks."""
    from ltrain.callbacks.freeze import FreezeSchedule

    position = trainer.callbacks.index(cache)
    for i, cb in enumerate(trainer.callbacks):
        if isinstance(cb, FreezeSchedule):
            if i > position:
                raise LtrainError(
                    "put FrozenFeatureCache after FreezeSchedule in the trainer's callbacks: the cache "
                    "must see the frozen groups after the schedule has applied its phase"
                )
            if cb.bn == "train":
                raise LtrainError(
                    "FreezeSchedule(bn='train') updates frozen BatchNorm statistics every step, so the "
                    "frozen layers' output changes and cannot be cached: use freeze.bn=eval or drop "
                    "the cache option"
                )


def _check_deterministic(dataset: Dataset, split: str, views: int | None) -> None:
    """Refuse a random transform (naming it) unless augmented views were asked for."""
    transform = getattr(dataset, "transform", None)
    if transform is None:
        return
    deterministic = getattr(transform, "deterministic", None)
    if deterministic is True:
        return
    if deterministic is False and views is not None:
        if not hasattr(dataset, "set_epoch"):
            raise LtrainError(
                f"cache.views needs a {split} dataset with set_epoch (to draw view v as epoch v would); "
                f"{type(dataset).__name__} has none"
            )
        return
    why = "is random" if deterministic is False else "does not say whether it is deterministic (no .deterministic)"
    raise LtrainError(
        f"the {split} transform {transform!r} {why}: caching it would train every epoch on the same "
        "augmentation. Use data.augment=none, set cache.views=K to precompute K augmented views per "
        "example, or drop the cache option"
    )


def _digest(indices: torch.Tensor) -> str:
    return hashlib.sha256(indices.to(torch.int64).numpy().tobytes()).hexdigest()[:16]
