"""An LR scheduler as Lightning wants it: the torch scheduler plus when to step it and what it monitors.

torch's schedulers need the optimizer (and OneCycleLR the run's total steps), neither of which exists
when Hydra builds the config; this holds the partial and finishes it in ``configure_optimizers``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch.optim import Optimizer

from ltrain.errors import LtrainError

INTERVALS = ("step", "epoch")


@dataclass
class LRSchedulerConfig:
    """``scheduler`` is a partial of a torch LR scheduler taking the optimizer.

    Args:
        interval: "step" to step after every optimizer step (formulas in steps), "epoch" after each epoch.
        monitor: the metric a plateau scheduler watches (e.g. "val/loss").
    """

    scheduler: Callable[..., Any]
    interval: str = "step"
    frequency: int = 1
    monitor: str | None = None

    def __post_init__(self) -> None:
        if self.interval not in INTERVALS:
            raise LtrainError(f"scheduler.interval={self.interval!r} is not one of {list(INTERVALS)}")

    def build(self, optimizer: Optimizer, total_steps: int | None = None) -> dict[str, Any]:
        """Lightning's lr_scheduler dict; ``total_steps`` fills a scheduler's ``total_steps`` if unset."""
        kwargs = {}
        fn = self.scheduler
        target = getattr(fn, "func", fn)
        given = getattr(fn, "keywords", {}) or {}
        params = inspect.signature(target).parameters
        if "total_steps" in params and given.get("total_steps") is None and given.get("epochs") is None:
            if total_steps is None or total_steps <= 0 or total_steps == float("inf"):
                raise LtrainError(
                    "this scheduler needs the run length: set trainer.max_epochs or scheduler.scheduler.total_steps"
                )
            kwargs["total_steps"] = int(total_steps)
        out = {"scheduler": fn(optimizer, **kwargs), "interval": self.interval, "frequency": self.frequency}
        if self.monitor:
            out["monitor"] = self.monitor
        return out


def optimizers_for(
    trainer, params, optimizer_factory: Callable[..., Optimizer], scheduler_config: LRSchedulerConfig | None
):
    """What a LightningModule's ``configure_optimizers`` returns: the optimizer and, if configured, its scheduler
    sized to the run (optimizer steps for ``interval: step``, epochs otherwise)."""
    optimizer = optimizer_factory(params)
    if scheduler_config is None:
        return optimizer
    total = trainer.estimated_stepping_batches if scheduler_config.interval == "step" else trainer.max_epochs
    return {"optimizer": optimizer, "lr_scheduler": scheduler_config.build(optimizer, total)}
