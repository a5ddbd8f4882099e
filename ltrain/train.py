"""Train (or fine-tune) a classifier from a composed config: the plain function behind the ``ltrain`` CLI."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

import ltrain
from ltrain.checkpoint_io import ChecksummedCheckpointIO
from ltrain.data.base import ImageClassificationData
from ltrain.data.factory import build_datamodule
from ltrain.errors import LtrainError, instantiate
from ltrain.history import METRICS_FILE, epochs_done, keep_history
from ltrain.io import atomic_write_json
from ltrain.models.factory import build_model, check_model_name
from ltrain.modules.classifier import ClassifierModule
from ltrain.modules.mixup import BatchMixup
from ltrain.optim.lr_find import find_lr
from ltrain.plots import plot_learning_curves
from ltrain.presets import apply_preset
from ltrain.publish import check_push, preprocessing_of, push_trained
from ltrain.resume import check_checkpoint, find_resume_point
from ltrain.validate import check_input_size, validate_train_config


def build_mixup(cfg: DictConfig, dm: ImageClassificationData) -> BatchMixup | None:
    """The ``mixup`` group's BatchMixup bound to the data's classes; the data then drops its last odd batch.

    timm's Mixup mixes a batch with its reverse, so every training batch must be even: ``data.batch_size`` is
    checked even (:func:`ltrain.validate.check_mixup`) and the last incomplete batch is dropped, as timm's own
    training loader does.
    """
    if not cfg.get("mixup"):
        return None
    mixup = instantiate(cfg.mixup, _convert_="all").bind(dm.num_classes, dm.input_shape)
    n_train = len(dm.splits["train"])
    if n_train < dm.batch_size:
        raise LtrainError(
            f"mixup drops the last incomplete training batch, and the training split has {n_train} examples, fewer "
            f"than data.batch_size={dm.batch_size}: every training batch would be dropped. Use an even "
            f"data.batch_size <= {n_train - n_train % 2}, or more training data"
        )
    dm.train_drop_last = True
    return mixup


def build_module(cfg: DictConfig, dm: ImageClassificationData) -> ClassifierModule:
    """The ClassifierModule for ``cfg`` sized to the data module's classes and input shape."""
    model = build_model(cfg.model, dm.num_classes, dm.input_shape)
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    return ClassifierModule(
        model,
        dm.num_classes,
        optimizer=instantiate(cfg.optimizer),
        scheduler=scheduler,
        l1=cfg.get("l1", 0.0),
        l2=cfg.get("l2", 0.0),
        loss=cfg.get("loss", "cross_entropy"),
        mixup=build_mixup(cfg, dm),
    )


def build_callbacks(cfg: DictConfig, run_dir: Path | None = None) -> list[Callback]:
    """Every callback the config names: the ``callbacks`` group's entries, then the ``freeze`` schedule and cache.

    A ``ModelCheckpoint`` whose ``dirpath`` is null saves in ``<run_dir>/checkpoints``, where ``resume=auto``
    looks. With ``trainer.enable_progress_bar=false`` the progress-bar entry is left out (Lightning refuses a bar
    callback on a Trainer without bars), so that switch keeps working whichever bar is chosen.
    """
    nodes = [c for c in (cfg.get("callbacks") or {}).values() if c is not None]
    callbacks: list[Callback] = [instantiate(c) for c in nodes]
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if run_dir is not None:
        for c in callbacks:
            if isinstance(c, ModelCheckpoint) and c.dirpath is None:
                c.dirpath = str(run_dir / "checkpoints")
    if cfg.get("freeze"):
        callbacks.append(instantiate(cfg.freeze, _convert_="all"))
    if cfg.get("cache"):  # after the schedule: the cache looks at what it froze
        callbacks.append(instantiate(cfg.cache, _convert_="all"))
    return callbacks


def build_loggers(cfg: DictConfig, run_dir: Path) -> list[Logger]:
    """The ``logger`` group's loggers; a null ``save_dir`` is the run directory (known only once resume chose it)."""
    loggers = []
    for node in (cfg.get("logger") or {}).values():
        if node is None:
            continue
        where = {"save_dir": str(run_dir)} if "save_dir" in node and node.save_dir is None else {}
        loggers.append(instantiate(node, **where))
    return loggers


def best_checkpoint(trainer: L.Trainer) -> ModelCheckpoint | None:
    """The checkpoint callback that keeps the best model: the first ``ModelCheckpoint`` with a monitored metric."""
    return next((c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None)


def checkpoint_plugins(cfg: DictConfig) -> list:
    """Checksummed atomic checkpoints, except where the strategy brings its own CheckpointIO (FSDP, XLA)."""
    trainer = cfg.trainer
    if trainer.get("accelerator") == "tpu" or str(trainer.get("strategy", "")).startswith(("fsdp", "xla", "deepspeed")):
        return []
    return [ChecksummedCheckpointIO()]


def hardware() -> str:
    """A one-line description of the machine, for published numbers."""
    import os

    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores ({cpu}), {gpu}, torch {torch.__version__}"


def continue_history(run_dir: Path, resume_from: Path | None) -> None:
    """Seed ``run_dir/logs/metrics.csv`` with the history the resumed checkpoint holds (see ltrain.history).

    Resuming from another run's checkpoint copies that run's rows; this directory's own rows of epochs the fit
    will redo (or all of them, for a run restarted before its first checkpoint) move to ``logs/dropped-*.csv``.
    """
    log_dir = run_dir / "logs"
    own = log_dir / "metrics.csv"
    source = resume_from.parent.parent / "logs" / "metrics.csv" if resume_from is not None else own
    if source.resolve() != own.resolve():
        keep_history(log_dir, own, 0)
    keep_history(log_dir, source, epochs_done(resume_from))


def record_hydra(cfg: DictConfig, run_dir: Path) -> None:
    """Hydra's record of the job (``.hydra/config.yaml``, ``overrides.yaml``, ``hydra.yaml``), written by ltrain.

    ltrain's config sets ``hydra.output_subdir: null`` so that Hydra writes nothing into a run directory before
    :func:`ltrain.resume.find_resume_point` has accepted it; this writes the same files once it has.
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    out = run_dir / ".hydra"
    out.mkdir(exist_ok=True)
    OmegaConf.save(cfg, out / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": OmegaConf.to_container(hc, resolve=False)}), out / "hydra.yaml")
    OmegaConf.save(OmegaConf.create(list(hc.overrides.task)), out / "overrides.yaml")


def _push(cfg: DictConfig, module: ClassifierModule, dm: ImageClassificationData, results: dict, run_dir: Path) -> str:
    """Push the trained network as ``zoo.push``; a failure names the command that pushes the finished run later."""
    name = str(cfg.zoo.push)
    try:
        return push_trained(cfg, module.model, dm, results).name
    except Exception as e:
        raise LtrainError(
            f"the run finished ({run_dir / 'results.json'}), but pushing it to the zoo as {name} failed: "
            f"{type(e).__name__}: {e}\n  Once fixed, push it with: ltrain-zoo push {name} --run {run_dir}"
        ) from e


@dataclass
class TrainedRun:
    """What :func:`train` measured and what it built.

    ``results`` is what ``results.json`` holds (plain JSON values); the live objects sit beside it, so a
    caller can test, predict or export without reloading a checkpoint.
    """

    results: dict[str, Any]
    trainer: L.Trainer
    module: ClassifierModule
    datamodule: ImageClassificationData


def train(cfg: DictConfig, run_dir: str | Path) -> TrainedRun:
    """Fit, test the best checkpoint and write ``results.json`` and ``learning_curves.png`` in ``run_dir``.

    The Trainer is assembled from config: ``cfg.trainer`` (its arguments), the ``callbacks`` group, the
    ``freeze`` and ``cache`` callbacks and the ``logger`` group.
    """

    validate_train_config(cfg)  # wrong types and sizes fail in the first second, naming the key
    apply_preset(cfg)  # a preset refuses contradictory overrides before any work
    check_model_name(cfg.model.name)  # fail before loading any data
    check_push(cfg)  # an invalid or taken zoo.push name fails now, not after training
    run_dir, resume_from = find_resume_point(cfg, Path(run_dir))  # refuses before anything is written
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = build_datamodule(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # model init independent of data loading
    module = build_module(cfg, dm)
    check_input_size(module.model, dm.input_shape, str(cfg.model.name))
    if resume_from is not None:
        check_checkpoint(resume_from, module)
    run_dir.mkdir(parents=True, exist_ok=True)
    if rank_zero_only.rank == 0:
        continue_history(run_dir, resume_from)
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        callbacks=build_callbacks(cfg, run_dir),
        logger=build_loggers(cfg, run_dir),
        plugins=checkpoint_plugins(cfg),
        default_root_dir=str(run_dir),
    )
    if trainer.is_global_zero:
        OmegaConf.save(cfg, run_dir / "config.yaml")
        record_hydra(cfg, run_dir)
    if cfg.get("tune"):  # the LR range test: lr_find.png + the suggested rate; then fit only if tune.fit
        lr_find = find_lr(cfg.tune, trainer, module, dm, run_dir)
        if not cfg.tune.fit:
            return TrainedRun({"lr_find": lr_find, "run_dir": str(run_dir), "best_val_acc": None}, trainer, module, dm)
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=resume_from, weights_only=True if resume_from else None)
    fit_seconds = time.perf_counter() - start
    checkpoint = best_checkpoint(trainer)
    best_path = checkpoint.best_model_path if checkpoint is not None else ""
    best_score = checkpoint.best_model_score if checkpoint is not None else None
    results: dict[str, Any] = {
        "seed": cfg.seed,
        "model": cfg.model.name,
        "data": dm.describe(),
        "input_shape": list(dm.input_shape),  # (C, H, W): with data.class_names, rebuilds the model (ltrain-zoo push)
        "preprocessing": preprocessing_of(dm),  # mean/std the inputs were standardised with (zoo entries record it)
        "run_dir": str(run_dir),
        "resumed_from": str(resume_from) if resume_from else None,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "fit_seconds": round(fit_seconds, 2),
        "best_checkpoint": best_path,
        "best_val_acc": float(best_score) if best_score is not None else None,
        "hardware": hardware(),
        "versions": {"ltrain": ltrain.__version__, "torch": torch.__version__, "lightning": L.__version__},
    }
    for callback in trainer.callbacks:  # e.g. where OptunaPruning stopped the run
        results.update(callback.summary() if hasattr(callback, "summary") else {})
    if cfg.get("test", True):
        ckpt = best_path or None  # no best checkpoint (callbacks.best_checkpoint=null): the final weights
        (metrics,) = trainer.test(module, datamodule=dm, ckpt_path=ckpt, verbose=False, weights_only=True)
        results["test_acc"] = metrics["test/acc"]
        results["test_loss"] = metrics["test/loss"]
    if trainer.is_global_zero:
        atomic_write_json(run_dir / "results.json", results)  # first: a failed push still leaves a finished run
        if (cfg.get("zoo") or {}).get("push"):  # rank 0 only: one writer to the zoo
            results["zoo_entry"] = _push(cfg, module, dm, results, run_dir)
            atomic_write_json(run_dir / "results.json", results)
        metrics_csv = run_dir / "logs" / METRICS_FILE
        if cfg.get("plots", True) and metrics_csv.is_file():
            plot_learning_curves(metrics_csv, run_dir / "learning_curves.png", title=f"{cfg.model.name} on {dm.name}")
    return TrainedRun(results, trainer, module, dm)
