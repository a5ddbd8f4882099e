"""Helpers shared by tests in several folders: tiny real modules and Trainers, and recorder callbacks."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from ltrain.train import build_module
from tests.conftest import compose_config


def tiny_module(dm, *overrides: str, seed: int = 0):
    """A ClassifierModule built from the real config with ``overrides`` (a 2x16 MLP unless overridden)."""
    cfg = compose_config("model.hidden=[16,16]", *overrides)
    L.seed_everything(seed, verbose=False)
    return build_module(cfg, dm), cfg


def tiny_trainer(tmp_path, *callbacks: Callback, **kwargs) -> L.Trainer:
    """A quiet CPU Trainer with few batches per epoch."""
    defaults = {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": 2,
        "limit_train_batches": 5,
        "limit_val_batches": 2,
        "limit_test_batches": 2,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "logger": False,
        "enable_checkpointing": False,
        "default_root_dir": str(tmp_path),
        "deterministic": True,
        "num_sanity_val_steps": 0,
    }
    return L.Trainer(callbacks=list(callbacks), **{**defaults, **kwargs})


def quiet_trainer(**kwargs) -> L.Trainer:
    """A quiet, deterministic CPU Trainer without logger or checkpoints (the pretext-task tests' runs)."""
    defaults = {
        "accelerator": "cpu",
        "enable_progress_bar": False,
        "logger": False,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "deterministic": True,
    }
    return L.Trainer(**(defaults | kwargs))


class LRRecorder(Callback):
    """Records (global step, lr, momentum) of every param group just before each optimizer step."""

    def __init__(self):
        self.rows: list[tuple[int, tuple[float, ...], tuple[float, ...]]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        groups = optimizer.param_groups
        mom = tuple(float(g["betas"][0]) if "betas" in g else float(g.get("momentum", 0.0)) for g in groups)
        self.rows.append((trainer.global_step, tuple(float(g["lr"]) for g in groups), mom))


class CrashAt(Callback):
    """Simulates a killed run: raises once ``global_step`` reaches ``step``."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            raise KilledRun(f"killed at step {trainer.global_step}")


class KilledRun(RuntimeError):
    pass


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class EpochSnapshots(Callback):
    """After each validation: (epoch, val/acc, a copy of the network's weights)."""

    def __init__(self):
        self.snapshots: list[tuple[int, float, dict[str, torch.Tensor]]] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and "val/acc" in trainer.callback_metrics:
            acc = float(trainer.callback_metrics["val/acc"])
            self.snapshots.append((trainer.current_epoch, acc, weights(pl_module.model)))


class GradientProbe(Callback):
    """Gradients just before Lightning clips them and just after the optimizer used them (the clipped ones)."""

    def __init__(self):
        self.before: list[list[torch.Tensor]] = []
        self.after: list[list[torch.Tensor]] = []

    def on_train_start(self, trainer, pl_module) -> None:
        def post_hook(optimizer, args, kwargs):
            self.after.append([p.grad.detach().clone() for g in optimizer.param_groups for p in g["params"]])

        self._handle = trainer.optimizers[0].register_step_post_hook(post_hook)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.before.append([p.grad.detach().clone() for g in optimizer.param_groups for p in g["params"]])

    def on_train_end(self, trainer, pl_module) -> None:
        self._handle.remove()


class NormProbe(Callback):
    """The largest incoming-weight norm of every Linear/Conv layer after each optimizer step."""

    def __init__(self):
        self.max_norms: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        from ltrain.callbacks.max_norm import LAYER_TYPES, incoming_weight_norms

        self.max_norms.append(
            max(incoming_weight_norms(m).max().item() for m in pl_module.modules() if isinstance(m, LAYER_TYPES))
        )
