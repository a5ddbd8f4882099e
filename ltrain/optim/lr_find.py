"""The LR range test (``ltrain tune=lr_find``): Lightning's learning-rate finder, plus what a run needs
from it: the loss-vs-LR PNG and the suggested rate written in the run directory, and optionally the
rate applied to the optimizer (and to 1cycle's peak, eta1).

Lightning's ``Tuner.lr_find`` grows the LR exponentially over ``num_training`` steps, records the
loss and restores the model afterwards; it does not save anything or know our config, which is
all this adds.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.tuner import Tuner
from omegaconf import DictConfig

from ltrain.io import atomic_write_json


def find_lr(
    tune: DictConfig,
    trainer: L.Trainer,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    run_dir: str | Path,
) -> dict[str, Any]:
    """Run the range test; write ``lr_find.png`` and ``lr_find.json``; apply the rate if ``tune.apply``.

    Returns ``{"suggested_lr", "min_loss_lr", "points", "applied"}``: ``suggested_lr`` is Lightning's
    steepest-descent point; ``min_loss_lr`` / 10 is the book's rule of thumb (10x below where the loss
    is lowest, just before it climbs).
    """
    run_dir = Path(run_dir)
    finder = Tuner(trainer).lr_find(
        module,
        datamodule=datamodule,
        min_lr=tune.min_lr,
        max_lr=tune.max_lr,
        num_training=tune.num_training,
        mode=tune.mode,
        early_stop_threshold=tune.early_stop_threshold,
        update_attr=False,
    )
    lrs, losses = finder.results["lr"], finder.results["loss"]
    finite = [(lr, loss) for lr, loss in zip(lrs, losses, strict=True) if math.isfinite(loss)]
    min_loss_lr = min(finite, key=lambda p: p[1])[0] if finite else None
    suggested = finder.suggestion()
    out = {
        "suggested_lr": suggested,
        "min_loss_lr": min_loss_lr,
        "points": [[float(lr), float(loss)] for lr, loss in zip(lrs, losses, strict=True)],
        "applied": False,
    }
    if tune.apply and suggested is not None:
        set_learning_rate(module, suggested)
        out["applied"] = True
    if trainer.is_global_zero:
        fig = finder.plot(suggest=True, show=False)
        fig.axes[0].set_title(f"LR range test: suggested lr = {suggested:.3g}" if suggested else "LR range test")
        fig.savefig(run_dir / "lr_find.png", dpi=100)
        import matplotlib.pyplot as plt

        plt.close(fig)
        atomic_write_json(run_dir / "lr_find.json", out)
        print(
            f"lr_find: suggested lr = {suggested:.4g} (loss-vs-lr plot: {run_dir / 'lr_find.png'})"
            if suggested
            else "lr_find: no suggestion (too few points); see lr_find.png"
        )
    return out


def set_learning_rate(module: L.LightningModule, lr: float) -> None:
    """Make ``module``'s optimizer partial (and a 1cycle scheduler's peak ``max_lr``) use ``lr``."""
    opt = module.optimizer_factory
    module.optimizer_factory = functools.partial(opt.func, *opt.args, **{**opt.keywords, "lr": lr})
    sched = getattr(module, "scheduler_config", None)
    fn = getattr(sched, "scheduler", None)
    if isinstance(fn, functools.partial) and "max_lr" in fn.keywords:
        sched.scheduler = functools.partial(fn.func, *fn.args, **{**fn.keywords, "max_lr": lr})
