"""FrozenFeatureCache: run the frozen bottom of a network once per example, train the top from its outputs.

Frozen layers do not change, so the output of the topmost frozen layer group is the same every epoch:
compute it once (train and val splits), then let every step run only the trainable top. What it adds to
Lightning (which has no such callback) and why it is built this way:

- **Exact or refused.** The cut is found from ``requires_grad`` (set by :class:`FreezeSchedule` or by hand)
  and proven on a probe batch (:func:`ltrain.models.split.split_model`); the frozen part runs in eval mode
  (BN on running statistics, as FreezeSchedule keeps frozen BN); a random augmentation, a random layer
  in the frozen part or ``FreezeSchedule(bn="train")`` is refused with the reason.
- **Any loader source, any callback order.** Lightning's train/val loader sources (a DataModule, the
  LightningModule's hooks, loaders given to ``fit``; no val loader is fine) are wrapped: every loader is
  handed out as its twin over a :class:`SwitchableDataset` — same sampler object, batch size, collate —
  serving images until the features exist and example ``i``'s features after. The features are computed
  when the twin's sampler first runs (the first batch), i.e. after EVERY callback's ``on_fit_start``
  whatever the list order, and also when ``estimated_stepping_batches`` built the loader in
  ``configure_optimizers``. The network's ``forward`` is replaced (on the instance, so its ``state_dict``
  and checkpoints are untouched) by the suffix; dropping the cache flips both back.
- **Fresh, or refused.** The frozen prefix's tensors are fingerprinted (version counters, storage,
  sha256) when the features are computed. Before each epoch's iterator is created (after every epoch-start
  hook) a trainable parameter below the cut drops the cache, and a frozen tensor something rewrote is a
  recompute; a change found at a batch start (mid-epoch, where features are already loaded) is refused,
  naming the tensor.
- **Larger than RAM, on disk.** ``storage="disk"`` writes one file per (key, split, rank) batch by batch as
  the features are computed and trains from it a batch at a time (:mod:`ltrain.callbacks.cache_file`), so
  the process never holds all the features. With ``reuse=True`` a later run with the same key (frozen
  weights, data description, split, transform, cut, shard) reads it; any difference is another key.
- **Fast precomputation.** Inference mode, eval mode, the split loader's workers; on a CPU at the training
  batch size (a large batch is slower there), on an accelerator at ``max(eval_batch_size, 256)``.
- **Fast cached epochs.** From memory a batch is one ``index_select`` of the features, handed on without
  a second stack (under torch's ``default_collate``) and without the loader's worker processes, whose start
  every epoch cost more than the epoch (resnet50 at 224 px, bench/cache.py case c); a disk cache keeps them.
- **DDP.** Each rank caches only the examples its sampler gives it: the train loader gets a
  :class:`ShardShuffleSampler` (a fixed shard per rank, reshuffled each epoch), the val loader
  torch's DistributedSampler shard; a rank only ever reads its own file.

Example::

    trainer = L.Trainer(callbacks=[FreezeSchedule([{"trainable": "head"}]), FrozenFeatureCache()])
    trainer.fit(module, datamodule=dm)   # any callback order; train_dataloaders=... works as well
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.connectors.data_connector import _DataLoaderSource
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, default_collate

from ltrain.callbacks.cache_data import (
    DTYPES,
    CachedFeatures,
    FeatureBatch,
    ShardShuffleSampler,
    SwitchableDataset,
    cache_file,
    cache_key,
    load_features,
)
from ltrain.callbacks.cache_file import FeatureWriter, map_features, read_header, release_freed_memory
from ltrain.callbacks.freeze import FreezeSchedule
from ltrain.errors import LtrainError
from ltrain.models.network import find_network
from ltrain.models.split import ModelSplit, eval_mode, split_model

STORAGES = ("memory", "disk")


def default_cache_dir() -> Path:
    """Where reusable caches live: ``$LTRAIN_CACHE/features`` (default ``~/.cache/ltrain/features``)."""
    return Path(os.environ.get("LTRAIN_CACHE", Path.home() / ".cache" / "ltrain")) / "features"


class FrozenFeatureCache(Callback):
    """Cache the output of the topmost frozen layer group and train the layers above it from the cache.

    Args:
        storage: "memory" (one tensor held by the process) or "disk" (a file per split, written as computed
            and read a batch at a time: features larger than RAM).
        directory: where "disk" writes; default ``<run dir>/feature_cache``, or ``$LTRAIN_CACHE/features``
            with ``reuse``.
        reuse: read a cache file a previous run wrote with the same key instead of recomputing (disk only).
        max_gb: refuse to start when this rank's features would take more than this many GB.
        views: with a random training augmentation, precompute this many augmented views per example
            (epoch e trains on view e mod views); None refuses random augmentations.
        batch_size: batch size of the precomputation (default: on an accelerator the DataModule's
            ``eval_batch_size``, at least 256; on a CPU the training batch size, faster there); it runs in
            inference mode with the split loader's workers.
        model_attr: the LightningModule attribute holding the network; None finds it
            (:func:`ltrain.models.network.find_network`: compiled and DDP wrappers are looked through).
        dtype: how features are stored: "float32" (default) keeps them exactly as the trunk produced them;
            "float16" / "bfloat16" halve the memory or disk they take and are NOT exact (batches are
            served cast back to the trunk's dtype; the error is measured in tests/callbacks/test_cache_dtype.py).
    """

    def __init__(
        self,
        storage: str = "memory",
        directory: str | None = None,
        reuse: bool = False,
        max_gb: float = 4.0,
        views: int | None = None,
        batch_size: int | None = None,
        model_attr: str | None = None,
        dtype: str = "float32",
    ):
        if storage not in STORAGES:
            raise LtrainError(f"cache.storage={storage!r} is not one of {list(STORAGES)}")
        if reuse and storage != "disk":
            raise LtrainError("cache.reuse=true reads files a previous run wrote: set cache.storage=disk")
        if views is not None and views < 1:
            raise LtrainError(f"cache.views={views} must be a positive number of augmented views (or null)")
        if max_gb <= 0:
            raise LtrainError(f"cache.max_gb={max_gb} must be positive")
        if dtype not in DTYPES:
            raise LtrainError(
                f"cache.dtype={dtype!r} is not one of {list(DTYPES)} (float32 is exact; the half types are not)"
            )
        if batch_size is not None and batch_size < 1:
            raise LtrainError(f"cache.batch_size={batch_size} must be a positive batch size (or null)")
        self.dtype = dtype
        self.storage, self.directory, self.reuse = storage, directory, reuse
        self.max_gb, self.views, self.batch_size, self.model_attr = max_gb, views, batch_size, model_attr
        self.split: ModelSplit | None = None
        self.cached: dict[str, CachedFeatures] = {}
        self.sources: dict[str, str] = {}  # split -> "computed" | path read
        self.files: dict[str, Path] = {}  # split -> this rank's file (disk storage)
        self.dropped_at_epoch: int | None = None
        self.recomputed: list[int] = []  # epochs at whose start the features were recomputed (frozen weights changed)
        self.fingerprint: Fingerprint | None = None
        self._loops: dict[str, Any] = {}
        self._sources: dict[str, _DataLoaderSource] = {}
        self._indices: dict[str, torch.Tensor] = {}
        self._views: dict[str, int] = {}
        self._datamodule: Any = None
        self._trainer: L.Trainer | None = None
        self._fit_started = self._prepared = False
        self._switch_split: dict[int, str] = {}
        self._early_workers: set[str] = set()
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
        _check_bn_policy(trainer)
        self._loops = {"train": trainer.fit_loop, "val": trainer.fit_loop.epoch_loop.val_loop}
        self._sources = {split: loop._data_source for split, loop in self._loops.items()}
        for split, loop in self._loops.items():
            loop._data_source = _CachedSource(
                self._sources[split].instance, self._sources[split].name, wrap=functools.partial(self._loader, split)
            )
        self._datamodule, self._trainer = trainer.datamodule, trainer

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The features are computed when Lightning next asks for a loader: after EVERY callback's
        # on_fit_start (FreezeSchedule's freezing, whatever order the callbacks are in), before any batch.
        self._fit_started = True
        for split, loop in self._loops.items():
            if split in self._early_workers:  # worker processes already hold the dataset: build the loader again
                loop._combined_loader = None

    def _prepare(self) -> None:
        """Cut the network at its topmost frozen group and compute (or read) the features of every split."""
        self._prepared = True
        trainer = self._trainer
        pl_module = trainer.lightning_module
        model = self._find_model(pl_module)
        loaders = {
            split: source.dataloader()
            for split, source in self._sources.items()
            if source.is_defined() and (split == "train" or trainer.limit_val_batches != 0)
        }
        self._datasets = {split: _dataset_of(loader, split) for split, loader in loaders.items()}
        self._workers = {s: (loader.num_workers, loader.multiprocessing_context) for s, loader in loaders.items()}
        self._train_batch = loaders["train"].batch_size
        train = self._datasets["train"]
        probe = torch.stack([_input_of(train[i]) for i in range(min(8, len(train)))]).to(pl_module.device)
        split = split_model(model, probe)
        if split is None:
            rank_zero_info("FrozenFeatureCache: no frozen layer group below the trainable ones; training uncached")
            return
        if getattr(pl_module, "mixes_inputs", False):
            raise LtrainError(
                f"{type(pl_module).__name__} mixes its training inputs (Mixup/CutMix): features cached from unmixed "
                "inputs cannot be mixed exactly. Drop one: mixup=null or the cache option"
            )
        for name, ds in self._datasets.items():
            _check_deterministic(ds, name, self.views if name == "train" else None)
        self._precision = trainer.precision_plugin
        indices = self._shards(trainer)
        views = {"train": self.views or 1, "val": 1}
        with torch.no_grad(), eval_mode(model), self._precision.forward_context():
            per_example = split.prefix(probe[:1])[0]
        self._feature_shape, self._feature_dtype = tuple(per_example.shape), per_example.dtype
        if self.dtype != "float32" and per_example.dtype.is_floating_point:
            per_example = per_example.to(DTYPES[self.dtype])
        total = per_example.numel() * per_example.element_size() * sum(views[s] * len(i) for s, i in indices.items())
        rank_zero_info(
            f"FrozenFeatureCache: caching the output of {split.cut!r} {tuple(per_example.shape)} "
            f"({per_example.dtype}) for {len(indices['train'])} train x {views['train']} view(s) + "
            f"{len(indices.get('val', ()))} val examples per rank: {total / 2**20:.1f} MiB ({self.storage})"
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
        self.split, self._model, self._indices, self._views = split, model, indices, views
        self._fill(trainer)
        for switch in self._switches:  # loaders handed out before the features existed serve them from now on
            switch.cached = self.cached.get(self._switch_split[id(switch)])
        model.forward = split.suffix  # the instance attribute shadows the class's forward; del restores it

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for switch in self._switches:
            switch.set_epoch(trainer.current_epoch)  # picks the epoch's view; the dataset's own set_epoch too

    def _before_iter(self, split: str, workers: int) -> None:
        """A cached loader is about to be iterated (an epoch's first batch is next): drop or refresh the cache.

        Runs after every callback's epoch-start hook, so a group FreezeSchedule unfroze below the cut drops
        the cache, and frozen tensors something rewrote since the features were computed are recomputed.
        """
        if not self._fit_started:
            if workers > 0:
                self._early_workers.add(split)
            return
        # before this iterator starts its worker processes: each takes a copy of the dataset as it is now,
        # so the features must exist already (a cached fit with workers used to feed them raw inputs)
        self._ensure_prepared()
        if self.split is None:
            return
        epoch = self._trainer.current_epoch
        unfrozen = [n for n, p in self.split.prefix_state().items() if isinstance(p, nn.Parameter) and p.requires_grad]
        if unfrozen:
            self._drop()
            self.dropped_at_epoch = epoch
            rank_zero_info(
                f"FrozenFeatureCache: dropped at epoch {epoch}: {unfrozen[0]} (and "
                f"{len(unfrozen) - 1} more) below the cut now train; continuing on the full model"
            )
            return
        changed = self.fingerprint.changed(self.split.prefix_state())
        if changed:
            rank_zero_info(f"FrozenFeatureCache: {changed[0]} changed since the features were computed; recomputing")
            self._fill(self._trainer)
            self.recomputed.append(epoch)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.split is None:
            return
        state = self.split.prefix_state()  # one walk of the prefix's modules a batch (a few ms for a resnet50)
        trainable = [n for n, p in state.items() if isinstance(p, nn.Parameter) and p.requires_grad]
        if trainable:
            raise LtrainError(
                f"FrozenFeatureCache: {trainable[0]} (below the cached cut {self.split.cut!r}) became trainable "
                f"during epoch {trainer.current_epoch}, after this epoch's batches were served from the cache: "
                "unfreeze at an epoch start (FreezeSchedule phases) or drop the cache option"
            )
        changed = self.fingerprint.changed(state)
        if changed:
            self._refuse_stale(changed, f"during epoch {trainer.current_epoch}, before batch {batch_idx}")

    def on_validation_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self.split is not None and "val" in self.cached:
            changed = self.fingerprint.changed(self.split.prefix_state())
            if changed:
                self._refuse_stale(changed, f"before validation batch {batch_idx}")

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    # ---- the work -------------------------------------------------------------------------------
    def _loader(self, split: str, loader: Any) -> Any:
        """A twin of Lightning's loader over a :class:`SwitchableDataset`: images until the features exist.

        The twin is handed out from the first request on, even one made before fit start (the standard
        ``estimated_stepping_batches`` in configure_optimizers builds the train loader and its iterator
        then), so Lightning keeps ONE iterator, with the same shuffling draws as an uncached run. The
        features are computed when its sampler first runs (the first batch), after every callback's
        on_fit_start; a loader that is not a DataLoader is passed through (refused if it must be cached).
        """
        if not isinstance(loader, DataLoader) or loader.batch_size is None:
            self._ensure_prepared()
            return loader
        trainer = self._trainer
        switch = SwitchableDataset(loader.dataset, self.cached.get(split) if self.split is not None else None)
        self._switches.append(switch)
        self._switch_split[id(switch)] = split
        if trainer.world_size > 1:
            sampler = self._sampler_for(split, loader.dataset)
        else:
            sampler = _NotifyingSampler(loader.sampler, self._ensure_prepared)
        return _CacheLoader(
            switch,
            before_iter=functools.partial(self._before_iter, split, loader.num_workers),
            batch_size=loader.batch_size,
            sampler=sampler,
            num_workers=loader.num_workers,
            collate_fn=_CollateFeatures(loader.collate_fn),
            pin_memory=loader.pin_memory,
            drop_last=loader.drop_last,
            worker_init_fn=loader.worker_init_fn,
            generator=loader.generator,
        )

    def _sampler_for(self, split: str, dataset: Dataset) -> ShardShuffleSampler:
        """Under DDP, the fixed-shard sampler of ``split`` (made once; the same for every loader of the split)."""
        if split not in self._samplers:
            trainer = self._trainer
            seed = torch.initial_seed() if split == "train" else 0
            sampler = ShardShuffleSampler(
                dataset, trainer.world_size, trainer.global_rank, seed, shuffle=split == "train"
            )
            sampler.on_iter = self._ensure_prepared
            self._samplers[split] = sampler
        return self._samplers[split]

    def _ensure_prepared(self) -> None:
        if self._fit_started and not self._prepared:
            with torch.random.fork_rng(devices=[]):  # the uncached run draws the same random numbers after this
                self._prepare()

    def _shards(self, trainer: L.Trainer) -> dict[str, torch.Tensor]:
        """The global indices each split's sampler gives this rank (all of them in one process)."""
        if trainer.world_size == 1:
            return {s: torch.arange(len(ds)) for s, ds in self._datasets.items()}
        return {s: torch.tensor(sorted(set(self._sampler_for(s, ds).shard))) for s, ds in self._datasets.items()}

    def _key_parts(self, split: ModelSplit, trainer: L.Trainer) -> dict[str, Any]:
        dm = self._datamodule
        if dm is not None:
            data = dm.describe() if hasattr(dm, "describe") else type(dm).__name__
        else:
            data = {s: f"{type(ds).__name__}[{len(ds)}]" for s, ds in self._datasets.items()}
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
        produced = self._feature_dtype
        stored = DTYPES[self.dtype] if self.dtype != "float32" and produced.is_floating_point else produced
        served = produced if stored != produced else None
        shape = (views, len(indices), *self._feature_shape)
        if path is None:
            features = torch.empty(shape, dtype=stored)

            def sink(view: int, start: int, chunk: torch.Tensor) -> None:
                features[view, start : start + len(chunk)] = chunk

            labels = self._compute(split, model, name, indices, views, trainer.current_epoch, sink)
            cached = CachedFeatures(indices, labels, features, served=served)
        else:  # written batch by batch as computed: the features are never all in memory
            writer = FeatureWriter(path, key, shape, stored, indices)
            try:
                labels = self._compute(
                    split, model, name, indices, views, trainer.current_epoch, lambda v, s, chunk: writer.write(chunk)
                )
                writer.finish(labels, {"served": str(produced).removeprefix("torch.")})
            except BaseException:
                writer.abort()
                raise
            mapped = map_features(path, read_header(path))
            cached = CachedFeatures(indices, labels, mapped.tensor, served=served, mapped=mapped)
        self.sources[name] = "computed"
        return cached

    def _compute(
        self,
        split: ModelSplit,
        model: nn.Module,
        name: str,
        indices: torch.Tensor,
        views: int,
        epoch: int,
        sink: Callable[[int, int, torch.Tensor], None],
    ) -> torch.Tensor:
        """Run the prefix (eval mode, inference mode) over ``indices`` once per view; ``sink`` takes each batch.

        The examples are loaded by a DataLoader with the split loader's workers, at the precomputation batch
        size (:func:`_precompute_batch`; eval mode: the features are the same whatever the batch); returns
        the labels.
        """
        device = next(model.parameters()).device
        dataset, workers, context = self._datasets[name], *self._workers[name]
        batch = self.batch_size or _precompute_batch(device, self._train_batch, self._datamodule)
        loader = DataLoader(
            Subset(dataset, indices.tolist()),
            batch_size=batch,
            num_workers=workers,
            multiprocessing_context=context if workers else None,
            collate_fn=_stack_items,
            pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(0),  # its workers' seed: never drawn from the global RNG
        )
        labels = []
        # inference mode: no autograd bookkeeping; its tensors never reach autograd (the sink copies them)
        with torch.inference_mode(), eval_mode(model), self._precision.forward_context():
            for view in range(views):
                if views > 1:
                    dataset.set_epoch(view)  # the augmentation epoch `view` of an uncached run would draw
                start = 0
                for x, y in loader:
                    # in the layout training feeds (the model's own, model.channels_last included): an NHWC
                    # input to NCHW weights would switch cuDNN to other kernels than the uncached path runs
                    x = x.to(device, non_blocking=True)
                    # the dtype the trunk produced (bf16 under bf16-mixed): what the uncached suffix receives
                    sink(view, start, split.prefix(x).cpu())
                    start += len(x)
                    release_freed_memory()  # the batch's activations, or glibc keeps hundreds of MiB resident
                    if view == 0:
                        labels.append(y)
        if views > 1:
            dataset.set_epoch(epoch)
        return torch.cat(labels).clone()  # a normal tensor, not an inference one

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
        for split, loop in self._loops.items():
            loop._data_source = self._sources[split]
        self._loops, self._sources, self._datamodule, self._switches = {}, {}, None, []
        self._trainer, self._fit_started, self._prepared = None, False, False
        self._switch_split, self._early_workers = {}, set()

    def _fill(self, trainer: L.Trainer) -> None:
        """Compute (or read) every split's features from the frozen prefix as it is now; fingerprint it."""
        split, model = self.split, self._model
        state = split.prefix_state()
        parts = self._key_parts(split, trainer)
        for name, idx in self._indices.items():
            key = cache_key(
                {
                    **parts,
                    "split": name,
                    "views": self._views[name],
                    "indices": _digest(idx),
                    "transform": repr(getattr(self._datasets[name], "transform", None)),
                },
                state,
            )
            fresh = self._load_or_compute(trainer, split, model, name, idx, self._views[name], key)
            if name in self.cached:  # recomputed: the loaders' datasets hold this object
                self.cached[name].replace(fresh)
            else:
                self.cached[name] = fresh
        self.fingerprint = Fingerprint(state)

    def _refuse_stale(self, changed: list[str], when: str) -> None:
        raise LtrainError(
            f"FrozenFeatureCache: the frozen {changed[0]} (below the cached cut {self.split.cut!r}"
            + (f"; and {len(changed) - 1} more" if len(changed) > 1 else "")
            + f") changed {when}, after its features were computed, so the next step would train on stale "
            "features. Something writes frozen weights or buffers mid-epoch (a callback, the LightningModule): "
            "let it skip frozen tensors or act at an epoch end, or drop the cache option"
        )

    def _find_model(self, pl_module: L.LightningModule) -> nn.Module:
        return find_network(pl_module, self.model_attr, "FrozenFeatureCache")


def _precompute_batch(device: torch.device, train_batch: int, datamodule: Any) -> int:
    """The precomputation's default batch size: large on an accelerator, the training batch size on a CPU.

    On a CPU a large batch is SLOWER per example (measured, resnet18 at 64 px, one thread: batch 512 took
    about 1.5-2.5x the time per image of batch 64 — its activations no longer fit in cache, and their
    fresh allocations fault pages in), so the CPU precomputation keeps the batch size the uncached run trains with.
    """
    if device.type == "cpu":
        return train_batch
    return max(getattr(datamodule, "eval_batch_size", None) or 0, 256)


def _stack_items(items: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels) of a batch of (input, label) items (a module-level function: workers may be spawned)."""
    return torch.stack([x for x, _ in items]), torch.stack([torch.as_tensor(y) for _, y in items])


def _check_bn_policy(trainer: L.Trainer) -> None:
    """FreezeSchedule(bn='train') moves frozen BN statistics every step: the frozen output is not fixed."""

    for cb in trainer.callbacks:
        if isinstance(cb, FreezeSchedule) and cb.bn == "train":
            raise LtrainError(
                "FreezeSchedule(bn='train') updates frozen BatchNorm statistics every step, so the "
                "frozen layers' output changes and cannot be cached: use freeze.bn=eval or drop "
                "the cache option"
            )


class _NotifyingSampler(Sampler):
    """``sampler`` unchanged, calling ``before`` when an epoch's indices are first drawn (the first fetch)."""

    def __init__(self, sampler: Sampler, before: Callable[[], None]):
        self.sampler, self.before = sampler, before

    def __len__(self) -> int:
        return len(self.sampler)

    def __getattr__(self, name: str) -> Any:  # set_epoch and whatever else Lightning asks the sampler for
        if name in ("sampler", "before"):
            raise AttributeError(name)
        return getattr(self.sampler, name)

    def __iter__(self):
        self.before()
        return iter(self.sampler)


class _CollateFeatures:
    """The loader's ``collate_fn``; a batch of cached features under torch's ``default_collate`` is handed on
    as the ``[features, labels]`` it already holds (what default_collate returns, without a second copy)."""

    def __init__(self, collate_fn: Callable[[list[Any]], Any]):
        self.collate_fn = collate_fn

    def __call__(self, items: list[Any]) -> Any:
        if isinstance(items, FeatureBatch) and self.collate_fn is default_collate:
            return [items.features, items.labels]
        return self.collate_fn(items)


class _CacheLoader(DataLoader):
    """A DataLoader that tells the cache when an epoch's iterator is about to be created."""

    def __init__(self, *args: Any, before_iter: Callable[[], None], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.before_iter = before_iter

    def __iter__(self):
        try:
            self.before_iter()
        except Exception as error:  # re-raised unchanged at the first batch
            # Lightning's teardown after an error raised while it creates its iterators asks the
            # half-built loader for its length and fails, hiding the error: raise it at the first batch
            return _RaiseOnNext(error)
        cached = self.dataset.cached
        if self.num_workers == 0 or cached is None or cached.mapped is not None:
            return super().__iter__()
        # Features in memory: a batch is one indexing of a tensor, so worker processes would only add their
        # start (every epoch: ~0.6 s for two workers of a resnet50 run, 9x the whole cached epoch, measured
        # with bench/cache.py case c) and a copy through shared memory. The same random draws either way.
        workers = self.num_workers
        self.num_workers = 0
        try:
            return super().__iter__()
        finally:
            self.num_workers = workers


class _RaiseOnNext:
    """An iterator whose first ``next`` raises ``error``."""

    def __init__(self, error: Exception):
        self.error = error

    def __iter__(self) -> _RaiseOnNext:
        return self

    def __next__(self) -> Any:
        raise self.error


@dataclass
class _CachedSource(_DataLoaderSource):
    """Lightning's loader source (DataModule hook, LightningModule hook or loaders given to ``fit``), wrapped."""

    wrap: Callable[[Any], Any] | None = None

    def dataloader(self) -> Any:
        return self.wrap(super().dataloader())


def _dataset_of(loader: Any, split: str) -> Dataset:
    if not isinstance(loader, DataLoader) or loader.batch_size is None:
        raise LtrainError(
            f"FrozenFeatureCache serves the {split} loader's dataset from the cache, so it needs one DataLoader "
            f"with a batch_size (got {type(loader).__name__}); drop the cache option"
        )
    return loader.dataset


def _input_of(item: Any) -> torch.Tensor:
    if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], torch.Tensor)):
        raise LtrainError(
            f"FrozenFeatureCache needs dataset items (input tensor, label); got {type(item).__name__}: drop the cache option"
        )
    return item[0]


class Fingerprint:
    """What the frozen prefix's tensors were when the features were computed: cheap to check every step.

    Each tensor's version counter and storage pointer are compared (in-place writes bump the counter,
    ``.data =`` replaces the storage); only when one moved is its content hashed and compared, so a
    write that left the values as they were is not a change.
    """

    def __init__(self, state: dict[str, torch.Tensor]):
        self.marks = {n: _mark(t) for n, t in state.items()}
        self.digests = {n: _tensor_digest(t) for n, t in state.items()}

    def changed(self, state: dict[str, torch.Tensor]) -> list[str]:
        out = []
        for name, t in state.items():
            if name not in self.marks:
                out.append(name)
            elif _mark(t) != self.marks[name]:
                if _tensor_digest(t) != self.digests[name]:
                    out.append(name)
                else:
                    self.marks[name] = _mark(t)
        return out


def _mark(t: torch.Tensor) -> tuple[int, int]:
    return t._version, t.data_ptr()


def _tensor_digest(t: torch.Tensor) -> str:
    t = t.detach().cpu().contiguous()
    return hashlib.sha256(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"").hexdigest()


# torchvision transforms (v1 and v2) whose output depends only on their input: safe to cache.
DETERMINISTIC_TORCHVISION = frozenset(
    {
        "Normalize", "Resize", "CenterCrop", "ToTensor", "PILToTensor", "ConvertImageDtype", "ToImage",
        "ToDtype", "ToPureTensor", "Grayscale", "Pad", "Identity", "RGB",
    }
)  # fmt: skip


def _random_parts(transform: Any) -> tuple[list[str], list[str]]:
    """(random, unknown) names of the parts of ``transform``: torchvision Compose walked, ltrain's own asked."""
    deterministic = getattr(transform, "deterministic", None)
    if isinstance(deterministic, bool):
        return ([] if deterministic else [repr(transform)]), []
    cls = type(transform)
    if cls.__module__.startswith("torchvision.transforms"):
        if cls.__name__ == "Compose":
            found = [_random_parts(t) for t in transform.transforms]
            return [r for f in found for r in f[0]], [u for f in found for u in f[1]]
        if cls.__name__ in DETERMINISTIC_TORCHVISION:
            return [], []
        return [repr(transform)], []  # RandomResizedCrop, ColorJitter, AutoAugment, GaussianBlur, ...
    return [], [repr(transform)]


def _check_deterministic(dataset: Dataset, split: str, views: int | None) -> None:
    """Refuse a random transform (naming it) unless augmented views were asked for.

    Accepted: ltrain's transforms that say ``deterministic=True`` and torchvision's deterministic ones
    (Normalize, Resize, CenterCrop, ToTensor, ... and a Compose of them). Refused by name: random
    torchvision transforms and anything that does not say whether it is deterministic.
    """
    transform = getattr(dataset, "transform", None)
    if transform is None:
        return
    random, unknown = _random_parts(transform)
    if not random and not unknown:
        return
    if random and not unknown and views is not None:
        if not hasattr(dataset, "set_epoch"):
            raise LtrainError(
                f"cache.views needs a {split} dataset with set_epoch (to draw view v as epoch v would); "
                f"{type(dataset).__name__} has none"
            )
        return
    if random:
        why = f"is random ({', '.join(random)})" if random != [repr(transform)] else "is random"
    else:
        why = f"does not say whether it is deterministic ({', '.join(unknown)} has no .deterministic)"
    raise LtrainError(
        f"the {split} transform {transform!r} {why}: caching it would train every epoch on the same "
        "augmentation. Use data.augment=none, set cache.views=K to precompute K augmented views per "
        "example, or drop the cache option"
    )


def _digest(indices: torch.Tensor) -> str:
    return hashlib.sha256(indices.to(torch.int64).numpy().tobytes()).hexdigest()[:16]
