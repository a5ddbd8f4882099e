"""Train (or fine-tune) a classifier from a composed config: the plain function behind the ``ltrain`` CLI."""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

import ltrain
from ltrain.checkpoint_io import ChecksummedCheckpointIO
from ltrain.data.base import ImageClassificationData
from ltrain.data.factory import build_datamodule
from ltrain.errors import LtrainError, instantiate
from ltrain.history import HistoryCSVLogger, epochs_done, keep_history
from ltrain.io import atomic_write_json
from ltrain.models.factory import build_model, check_model_name
from ltrain.modules.classifier import ClassifierModule
from ltrain.presets import apply_preset
from ltrain.publish import check_push, preprocessing_of, push_trained
from ltrain.validate import check_input_size, validate_train_config


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
    )


def build_callbacks(cfg: DictConfig) -> list[Callback]:
    """Every callback the config names: ``callbacks.*`` entries and the ``freeze`` schedule, if any."""
    from ltrain.callbacks.epoch_seed import EpochSeed
    from ltrain.callbacks.plateau_resume import ResumePlateauSchedulers

    callbacks: list[Callback] = [EpochSeed(cfg.seed), ResumePlateauSchedulers()]
    callbacks += [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    if cfg.get("freeze"):
        callbacks.append(instantiate(cfg.freeze, _convert_="all"))
    if cfg.get("cache"):  # after the schedule: the cache looks at what it froze
        callbacks.append(instantiate(cfg.cache, _convert_="all"))
    return callbacks


def checkpoints(dirpath: Path) -> tuple[ModelCheckpoint, ModelCheckpoint]:
    """``best.ckpt`` (highest val/acc, for testing) and ``last.ckpt`` (every epoch, for resuming).

    Two callbacks, because Lightning 2.6's ``save_last=True`` refreshes last.ckpt only in epochs where the
    monitored metric improved, so it can lag behind the run. Lightning steps ReduceLROnPlateau after the
    epoch's checkpoint and skips that step on resume; ``ResumePlateauSchedulers`` takes it.
    """
    best = ModelCheckpoint(
        dirpath=dirpath,
        filename="best",
        monitor="val/acc",
        mode="max",
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    last = ModelCheckpoint(dirpath=dirpath, filename="last", monitor=None, save_top_k=1, enable_version_counter=False)
    return best, last


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


def train(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Fit, test the best checkpoint and write ``results.json`` and ``learning_curves.png`` in ``run_dir``."""
    from ltrain.resume import check_checkpoint, find_resume_point

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
    checkpoint, last = checkpoints(run_dir / "checkpoints")
    logger = HistoryCSVLogger(save_dir=str(run_dir))
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        callbacks=[*build_callbacks(cfg), checkpoint, last],
        logger=logger,
        plugins=checkpoint_plugins(cfg),
        default_root_dir=str(run_dir),
    )
    if trainer.is_global_zero:
        OmegaConf.save(cfg, run_dir / "config.yaml")
        record_hydra(cfg, run_dir)
    if cfg.get("tune"):  # the LR range test: lr_find.png + the suggested rate; then fit only if tune.fit
        from ltrain.optim.lr_find import find_lr

        lr_find = find_lr(cfg.tune, trainer, module, dm, run_dir)
        if not cfg.tune.fit:
            return {
                "lr_find": lr_find,
                "run_dir": str(run_dir),
                "best_val_acc": None,
                "trainer": trainer,
                "module": module,
                "datamodule": dm,
            }
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=resume_from, weights_only=True if resume_from else None)
    fit_seconds = time.perf_counter() - start
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
        "best_checkpoint": checkpoint.best_model_path,
        "best_val_acc": float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None,
        "hardware": hardware(),
        "versions": {"ltrain": ltrain.__version__, "torch": torch.__version__, "lightning": L.__version__},
    }
    for callback in trainer.callbacks:  # e.g. where OptunaPruning stopped the run
        results.update(callback.summary() if hasattr(callback, "summary") else {})
    if cfg.get("test", True):
        ckpt = "best" if checkpoint.best_model_path else None
        (metrics,) = trainer.test(module, datamodule=dm, ckpt_path=ckpt, verbose=False, weights_only=True)
        results["test_acc"] = metrics["test/acc"]
        results["test_loss"] = metrics["test/loss"]
    if trainer.is_global_zero:
        atomic_write_json(run_dir / "results.json", results)  # first: a failed push still leaves a finished run
        if (cfg.get("zoo") or {}).get("push"):  # rank 0 only: one writer to the zoo
            results["zoo_entry"] = _push(cfg, module, dm, results, run_dir)
            atomic_write_json(run_dir / "results.json", results)
        metrics_csv = Path(logger.log_dir) / "metrics.csv"
        if cfg.get("plots", True) and metrics_csv.is_file():
            from ltrain.plots import plot_learning_curves

            plot_learning_curves(metrics_csv, run_dir / "learning_curves.png", title=f"{cfg.model.name} on {dm.name}")
    results["trainer"] = trainer
    results["module"] = module
    results["datamodule"] = dm
    return results
