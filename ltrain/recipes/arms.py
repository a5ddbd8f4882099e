"""Arms of the toolbox recipes: the run's config with a few dotted keys changed, trained by ``train``.

An arm is a mapping of dotted keys to values (``{model.activation: selu, optimizer.lr: 7e-4}``). A
value may name another node of the config with ``@`` (``scheduler: "@recipe.one_cycle"``) so that a
recipe can pull a whole config-group option into ``recipe.*`` through its defaults list and switch
an arm to it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from ltrain.plots import read_metrics


def arm_config(cfg: DictConfig, settings: dict[str, Any]) -> DictConfig:
    """A copy of ``cfg`` with ``settings`` applied and the recipe runner removed (the arm is a plain run)."""
    arm = copy.deepcopy(cfg)
    with open_dict(arm):
        for key, value in settings.items():
            if isinstance(value, str) and value.startswith("@"):
                value = copy.deepcopy(OmegaConf.select(cfg, value[1:], throw_on_missing=True))
            OmegaConf.update(arm, key, value, merge=False, force_add=True)
        arm.recipe.runner = None
    return arm


def epoch_curves(run_dir: str | Path) -> dict[str, list[float]]:
    """Per-epoch train loss, val loss and val accuracy of a finished ``train`` run (from its CSV log)."""
    series = read_metrics(Path(run_dir) / "logs" / "metrics.csv")
    out = {}
    for name, key in (("train_loss", "train/loss_epoch"), ("val_loss", "val/loss"), ("val_acc", "val/acc")):
        out[name] = [v for _, v in sorted(series.get(key, []))]
    return out


def plot_curves(curves: dict[str, dict[str, list[float]]], out_png: Path, title: str) -> None:
    """Validation accuracy and training loss per epoch, one line per arm."""
    from matplotlib.figure import Figure  # no pyplot: drawing to a file must not switch the user's backend

    fig = Figure(figsize=(12, 4.5))
    axes = fig.subplots(1, 2)
    for arm, c in curves.items():
        axes[0].plot(range(1, len(c["val_acc"]) + 1), c["val_acc"], marker="o", label=arm)
        axes[1].plot(range(1, len(c["train_loss"]) + 1), c["train_loss"], marker="o", label=arm)
    for ax, what in zip(axes, ("validation accuracy", "training loss (each arm's own loss)"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_title(what)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
