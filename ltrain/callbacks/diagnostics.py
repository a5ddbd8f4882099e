"""Training diagnostics as a Lightning callback: what the chapter tells you to look at while training.

- per-layer activation mean and std (forward hooks on the activation modules), and the fraction of
  dead ReLU units (units that output 0 for every example of the batch);
- per-layer gradient norms (of each Linear/Conv weight, before clipping and the step);
- a warning when the loss at initialisation is far from ln(C), the loss of a uniform guess over C
  classes (a larger one means the output layer's initial weights are too big);
- a stop, with a message naming the learning rate, when the loss is NaN/inf or climbs to
  ``explode_factor`` times its start: the learning rate is too high;
- PNG plots and a JSON file of the per-layer statistics in the run directory.

Lightning has no such callback: ``LearningRateMonitor`` only logs LRs, and ``EarlyStopping``'s
``check_finite`` stops on a non-finite *monitored* metric after validation, not on the training loss
at the step it diverges, and says nothing about the LR. Under DDP the stop is
decided on every rank with ``strategy.reduce_boolean_decision`` so all ranks stop together; warnings,
JSON and plots come from rank zero.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from ltrain.errors import LtrainError
from ltrain.io import atomic_write_json
from ltrain.models.activations import Arctan, BentIdentity, Maxout, Swish
from ltrain.models.network import find_network

ACTIVATION_TYPES = (
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardtanh,
    nn.Softsign,
    nn.ReLU,
    nn.LeakyReLU,
    nn.RReLU,
    nn.PReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Softplus,
    Arctan,
    BentIdentity,
    Swish,
    Maxout,
)
RELU_TYPES = (nn.ReLU, nn.ReLU6)
WEIGHT_LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class DiagnosticsWarning(UserWarning):
    """A training-health warning from TrainingDiagnostics (bad initial loss, divergence)."""


def watched_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules whose outputs are the per-layer statistics: the activations, else the Linear/Conv layers."""
    acts = [(n, m) for n, m in model.named_modules() if isinstance(m, ACTIVATION_TYPES)]
    return acts or [(n, m) for n, m in model.named_modules() if isinstance(m, WEIGHT_LAYER_TYPES)]


def output_stats(out: torch.Tensor, relu: bool) -> dict[str, float]:
    """Mean and std of a layer's output; for ReLUs also the fraction of units (dim 1) never positive."""
    out = out.detach().float()
    stats = {"mean": out.mean().item(), "std": out.std().item() if out.numel() > 1 else 0.0}
    if relu and out.dim() >= 2:
        alive = (out > 0).transpose(0, 1).flatten(1).any(dim=1)  # (units,): positive for some example/position
        stats["dead"] = 1.0 - alive.float().mean().item()
    return stats


class ActivationRecorder:
    """Forward hooks that record ``output_stats`` of each watched layer while ``recording`` is on.

    Usable on its own: ``with ActivationRecorder(model) as rec: model(x)`` then ``rec.stats``.
    """

    def __init__(self, model: nn.Module, layers: list[tuple[str, nn.Module]] | None = None):
        self.layers = layers if layers is not None else watched_layers(model)
        self.recording = True
        self.stats: dict[str, dict[str, float]] = {}
        self._handles = [
            m.register_forward_hook(self._hook(name, isinstance(m, RELU_TYPES))) for name, m in self.layers
        ]

    def _hook(self, name: str, relu: bool):
        def hook(module: nn.Module, args: Any, out: Any) -> None:
            if self.recording and isinstance(out, torch.Tensor):
                self.stats[name] = output_stats(out, relu)  # a module called twice keeps its last call

        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> ActivationRecorder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def learning_rates(trainer: L.Trainer) -> list[float]:
    """The distinct learning rates of every optimizer's parameter groups."""
    return sorted({float(g["lr"]) for opt in trainer.optimizers for g in opt.param_groups})


class TrainingDiagnostics(Callback):
    """Per-layer activation/gradient statistics, dead ReLUs, an ln(C) check at init, a stop on divergence.

    Args:
        every_n_steps: record the per-layer statistics every this many optimizer steps (the loss checks
            run every step).
        num_classes: C for the ln(C) check (default: ``pl_module.num_classes`` if it has one, else no check).
        init_loss_factor: warn when the first loss is more than this factor above or below ln(C).
        explode_factor: stop when the training loss exceeds this multiple of the first loss.
        on_divergence: "stop" sets ``trainer.should_stop`` (the run ends cleanly, its best checkpoint is
            kept); "raise" raises an LtrainError.
        out_dir: where diagnostics.json and diagnostics.png go (default: ``trainer.default_root_dir``).
        plots: write the PNG.
        model_attr: the LightningModule attribute holding the network; None finds it
            (:func:`ltrain.models.network.find_network`: compiled and DDP wrappers are looked through).

    Example::

        trainer = L.Trainer(callbacks=[TrainingDiagnostics(every_n_steps=20)])
        trainer.fit(module)   # -> diagnostics.png, diagnostics.json; stops if the loss diverges
    """

    def __init__(
        self,
        every_n_steps: int = 10,
        num_classes: int | None = None,
        init_loss_factor: float = 2.0,
        explode_factor: float = 5.0,
        on_divergence: str = "stop",
        out_dir: str | None = None,
        plots: bool = True,
        model_attr: str | None = None,
    ):
        if every_n_steps < 1:
            raise LtrainError(f"TrainingDiagnostics needs every_n_steps >= 1, got {every_n_steps}")
        if on_divergence not in ("stop", "raise"):
            raise LtrainError(f"TrainingDiagnostics on_divergence={on_divergence!r} is not one of ['stop', 'raise']")
        if init_loss_factor <= 1 or explode_factor <= 1:
            raise LtrainError("TrainingDiagnostics needs init_loss_factor > 1 and explode_factor > 1")
        self.every_n_steps = every_n_steps
        self.num_classes = num_classes
        self.init_loss_factor = init_loss_factor
        self.explode_factor = explode_factor
        self.on_divergence = on_divergence
        self.out_dir = out_dir
        self.plots = plots
        self.model_attr = model_attr
        self.initial_loss: float | None = None
        self.stop_message: str | None = None
        self.history: list[dict[str, Any]] = []  # one row per recorded step
        self._recorder: ActivationRecorder | None = None
        self._row: dict[str, Any] | None = None

    # -- hooks -------------------------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._recorder = ActivationRecorder(find_network(pl_module, self.model_attr, "TrainingDiagnostics"))
        self._recorder.recording = False

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        record = trainer.global_step % self.every_n_steps == 0
        self._row = {"step": trainer.global_step, "layers": defaultdict(dict)} if record else None
        if self._recorder is not None:
            self._recorder.recording = record
            self._recorder.stats = {}

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        if self._row is None:
            return
        for name, m in find_network(pl_module, self.model_attr, "TrainingDiagnostics").named_modules():
            if isinstance(m, WEIGHT_LAYER_TYPES) and m.weight.grad is not None:
                self._row["layers"][name]["grad_norm"] = m.weight.grad.detach().norm().item()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        loss = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        if self.initial_loss is None and math.isfinite(loss):
            self.initial_loss = loss
            self._check_initial_loss(trainer, pl_module, loss)
        if self._row is not None:
            for name, stats in (self._recorder.stats if self._recorder else {}).items():
                self._row["layers"][name].update(stats)
            self._row.update(loss=loss, lr=learning_rates(trainer))
            self._row["layers"] = dict(self._row["layers"])
            self.history.append(self._row)
            self._row = None
        self._check_divergence(trainer, loss)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._recorder is not None:
            self._recorder.remove()
            self._recorder = None
        if trainer.is_global_zero:
            out = Path(self.out_dir or trainer.default_root_dir)
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(
                out / "diagnostics.json",
                {"initial_loss": self.initial_loss, "stop_message": self.stop_message, "history": self.history},
            )
            if self.plots and self.history:
                plot_diagnostics(self.history, out / "diagnostics.png")

    def state_dict(self) -> dict[str, Any]:
        return {"initial_loss": self.initial_loss, "stop_message": self.stop_message, "history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.initial_loss = state_dict.get("initial_loss")
        self.stop_message = state_dict.get("stop_message")
        self.history = list(state_dict.get("history", []))

    # -- checks ------------------------------------------------------------------------------------
    def _check_initial_loss(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: float) -> None:
        c = self.num_classes or getattr(pl_module, "num_classes", None)
        if not c or c < 2 or not trainer.is_global_zero:
            return
        expected = math.log(c)
        if not expected / self.init_loss_factor <= loss <= expected * self.init_loss_factor:
            warnings.warn(
                f"the loss at initialisation is {loss:.3f}, far from ln({c}) = {expected:.3f} (a uniform guess): "
                "the output layer's initial weights are probably too large (or the inputs are not standardised); "
                "try a smaller init for the head, e.g. model.init=glorot_normal",
                DiagnosticsWarning,
                stacklevel=2,
            )

    def _check_divergence(self, trainer: L.Trainer, loss: float) -> None:
        bad = not math.isfinite(loss) or (
            self.initial_loss is not None and loss > self.explode_factor * self.initial_loss
        )
        # every rank takes part in the reduction each step; any rank diverging stops them all
        if not trainer.strategy.reduce_boolean_decision(bad, all=False):
            return
        lrs = ", ".join(f"{lr:g}" for lr in learning_rates(trainer))
        if not bad:
            what = "NaN/inf or exploding on another rank"
        elif not math.isfinite(loss):
            what = "NaN/inf"
        else:
            what = f"{loss:.4g}, more than {self.explode_factor:g}x its start ({self.initial_loss:.4g})"
        self.stop_message = (
            f"training diverged at step {trainer.global_step}: the loss is {what}. "
            f"The learning rate (lr={lrs}) is too high: lower optimizer.lr (e.g. 10x smaller) "
            "or find one with: ltrain tune=lr_find"
        )
        if self.on_divergence == "raise":
            raise LtrainError(self.stop_message)
        trainer.should_stop = True
        if trainer.is_global_zero:
            warnings.warn(self.stop_message, DiagnosticsWarning, stacklevel=2)


def plot_diagnostics(history: list[dict[str, Any]], out_png: str | Path) -> Path:
    """A 2x2 figure of per-layer activation mean, activation std, weight-gradient norm and dead-ReLU fraction
    against the optimizer step (one line per layer, coloured from bottom to top)."""
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: drawing to a file must not switch the user's backend

    panels = (
        ("mean", "activation mean"),
        ("std", "activation std"),
        ("grad_norm", "weight gradient norm"),
        ("dead", "dead ReLU fraction"),
    )
    fig = Figure(figsize=(11, 7))
    axes = fig.subplots(2, 2)
    for ax, (key, title) in zip(axes.flat, panels, strict=True):
        names = list(dict.fromkeys(n for row in history for n, s in row["layers"].items() if key in s))
        cmap = matplotlib.colormaps["viridis"]
        for i, name in enumerate(names):
            pts = [(row["step"], row["layers"][name][key]) for row in history if key in row["layers"].get(name, {})]
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, color=cmap(i / max(1, len(names) - 1)), label=name)
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        if key == "grad_norm" and names:
            ax.set_yscale("log")
        if names and len(names) <= 12:
            ax.legend(fontsize=6)
        if not names:
            ax.text(0.5, 0.5, "no such layers", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=100)
    return out_png
