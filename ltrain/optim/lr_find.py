"""The LR range test (``ltrain tune=lr_find``): Lightning's learning-rate finder, plus what a run needs
from it: the loss-vs-LR PNG and the suggested rate written in the run directory, and optionally the
rate applied to the optimizer (and to 1cycle's peak, eta1) -- only when the curve can be trusted.

Lightning's ``Tuner.lr_find`` grows the LR exponentially over ``num_training`` steps, records the
(smoothed) loss and restores the model afterwards; it does not save anything or know our config. Its
``suggestion()`` takes the steepest slope of the loss against the LR itself, not against log(LR), the
axis the sweep is spaced and plotted on; with exponential spacing that favours the smallest rates, so it
picks the start of the descent, or a flat stretch before it (``tune.apply`` then trained at a rate 20x
too low). What this adds: the suggestion as the steepest descent against log(LR), and a trust rule
(:func:`untrusted_reason`) that keeps the configured rate, with a warning, when the curve says nothing.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.tuner import Tuner
from lightning.pytorch.utilities import rank_zero_warn
from omegaconf import DictConfig

from ltrain.errors import LtrainError
from ltrain.io import atomic_write_json

SKIP_BEGIN, SKIP_END = 10, 1  # as Lightning's suggestion: the smoothed loss's warm-up, and the last point
MIN_POINTS = 5


def find_lr(
    tune: DictConfig,
    trainer: L.Trainer,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    run_dir: str | Path,
) -> dict[str, Any]:
    """Run the range test; write ``lr_find.png`` and ``lr_find.json``; apply the rate if ``tune.apply`` and trusted.

    Returns ``{"suggested_lr", "lightning_suggested_lr", "min_loss_lr", "untrusted", "points", "applied"}``:
    ``suggested_lr`` is the steepest descent of the loss against log(LR) (:func:`steepest_descent`);
    ``min_loss_lr`` / 10 is the book's rule of thumb (10x below where the loss is lowest, just before it
    climbs); ``untrusted`` is why the curve cannot be trusted (:func:`untrusted_reason`), else None.
    """
    run_dir = Path(run_dir)
    if not 0 <= tune.min_drop < 1:
        raise LtrainError(f"tune.min_drop={tune.min_drop} must be in [0, 1): the fraction the loss must fall by")
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
    lrs, losses = list(finder.results["lr"]), list(finder.results["loss"])
    considered = [
        (lr, loss) for lr, loss in list(zip(lrs, losses, strict=True))[SKIP_BEGIN:-SKIP_END] if math.isfinite(loss)
    ]
    min_loss_lr = min(considered, key=lambda p: p[1])[0] if considered else None
    suggested = steepest_descent(considered)
    untrusted = untrusted_reason(considered, suggested, tune.min_drop)
    out = {
        "suggested_lr": suggested,
        "lightning_suggested_lr": finder.suggestion(),
        "min_loss_lr": min_loss_lr,
        "untrusted": untrusted,
        "points": [[float(lr), float(loss)] for lr, loss in zip(lrs, losses, strict=True)],
        "applied": False,
    }
    if tune.apply and untrusted is None:
        set_learning_rate(module, suggested)
        out["applied"] = True
    elif tune.apply:
        rank_zero_warn(
            f"lr_find: the suggestion is not applied: {untrusted}. The run keeps optimizer.lr="
            f"{module.optimizer_factory.keywords.get('lr')}; look at {run_dir / 'lr_find.png'} and set optimizer.lr "
            "by hand, or sweep a wider or longer range (tune.min_lr, tune.max_lr, tune.num_training)"
        )
    if trainer.is_global_zero:
        fig = finder.plot(suggest=False, show=False)
        ax = fig.axes[0]
        if suggested is not None:
            ax.plot([suggested], [dict(considered)[suggested]], marker="o", markersize=10, color="red")
        title = f"LR range test: suggested lr = {suggested:.3g}" if suggested else "LR range test: no suggestion"
        ax.set_title(title + (" (not trusted)" if untrusted else ""))
        fig.savefig(run_dir / "lr_find.png", dpi=100)
        import matplotlib.pyplot as plt

        plt.close(fig)
        atomic_write_json(run_dir / "lr_find.json", out)
        print(
            f"lr_find: suggested lr = {suggested:.4g} (loss-vs-lr plot: {run_dir / 'lr_find.png'})"
            + (f"; NOT TRUSTED: {untrusted}" if untrusted else "")
            if suggested
            else f"lr_find: no suggestion ({untrusted}); see lr_find.png"
        )
    return out


def steepest_descent(points: list[tuple[float, float]]) -> float | None:
    """The LR where the loss falls fastest against log(LR): central differences on the swept points."""
    if len(points) < 2:
        return None
    logs = [math.log(lr) for lr, _ in points]
    slopes = []
    for i in range(len(points)):
        a, b = max(i - 1, 0), min(i + 1, len(points) - 1)
        slopes.append((points[b][1] - points[a][1]) / (logs[b] - logs[a]))
    return points[min(range(len(points)), key=slopes.__getitem__)][0]


def untrusted_reason(points: list[tuple[float, float]], suggested: float | None, min_drop: float = 0.1) -> str | None:
    """Why a suggestion from this curve cannot be trusted, or None. The rule, on the smoothed losses after
    Lightning's first 10 (smoothing warm-up) and without the last point:

    1. at least 5 finite points;
    2. the curve is not flat: the lowest loss is at least ``min_drop`` (10%) below the first point's loss;
    3. the suggestion lies on the descent: at a lower LR than the lowest loss, and the loss falls by at
       least half of ``min_drop`` x the first loss within the decade after it (suggestion to 10x it), so
       not on a flat stretch before the fall nor where the loss climbs again.
    """
    if len(points) < MIN_POINTS or suggested is None:
        return (
            f"{len(points)} usable points (at least {MIN_POINTS} after the first {SKIP_BEGIN}): raise tune.num_training"
        )
    start = points[0][1]
    low_lr, low = min(points, key=lambda p: p[1])
    drop = (start - low) / abs(start) if start else 0.0
    if drop < min_drop:
        return f"the loss curve is flat: it falls by {drop:.1%} over the sweep, less than tune.min_drop={min_drop:.0%}"
    at = dict(points)[suggested]
    decade = min(loss for lr, loss in points if suggested <= lr <= 10 * suggested)
    if suggested >= low_lr or (at - decade) < min_drop / 2 * abs(start):
        return (
            f"the suggested lr={suggested:.3g} (loss {at:.4g}) is not on the descent to the lowest loss "
            f"{low:.4g} at lr={low_lr:.3g}: the loss falls by only {at - decade:.3g} in the decade after it"
        )
    return None


def set_learning_rate(module: L.LightningModule, lr: float) -> None:
    """Make ``module``'s optimizer partial (and a 1cycle scheduler's peak ``max_lr``) use ``lr``."""
    opt = module.optimizer_factory
    module.optimizer_factory = functools.partial(opt.func, *opt.args, **{**opt.keywords, "lr": lr})
    sched = getattr(module, "scheduler_config", None)
    fn = getattr(sched, "scheduler", None)
    if isinstance(fn, functools.partial) and "max_lr" in fn.keywords:
        sched.scheduler = functools.partial(fn.func, *fn.args, **{**fn.keywords, "max_lr": lr})
