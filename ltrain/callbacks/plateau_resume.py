"""Resume a ReduceLROnPlateau schedule without losing a step.

Why this exists: Lightning 2.6 steps plateau schedulers at the very end of an epoch, after the epoch's
checkpoint was written (other epoch schedulers step before validation, step schedulers after each
step). A run resumed from that checkpoint starts the next epoch without the step, and a run resumed
mid-epoch skips it at the end of that epoch (``_FitLoop.on_advance_end``: ``if not self.restarting``),
because Lightning keeps no metrics in the checkpoint. Either way the resumed schedule lags by one epoch.

The invariant this callback restores: after ``k`` finished epochs a plateau scheduler stepped at
epoch ends has been stepped ``k // frequency`` times (its ``last_epoch``). A missing step is taken
at the next epoch start (or the end of training) with the monitored value of that epoch: the freshly
logged one, else the one this callback saved in the checkpoint when it was written.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch


class ResumePlateauSchedulers(L.Callback):
    """Take the ReduceLROnPlateau step Lightning skips when a run resumes from a checkpoint."""

    def __init__(self) -> None:
        self._saved: dict[str, float] = {}  # monitored values as of the checkpoint this run resumed from
        self._trainer: L.Trainer | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._catch_up(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._catch_up(trainer, pl_module)

    def _catch_up(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        finished = trainer.fit_loop.epoch_progress.current.completed
        for config in self._plateau_configs(trainer):
            if config.scheduler.last_epoch >= finished // config.frequency:
                continue
            metric = trainer.callback_metrics.get(config.monitor)
            if metric is None and config.monitor in self._saved:
                metric = torch.tensor(self._saved[config.monitor])
            if metric is not None:  # else Lightning would not have stepped it either (non-strict, never logged)
                pl_module.lr_scheduler_step(config.scheduler, metric)

    @staticmethod
    def _plateau_configs(trainer: L.Trainer) -> list:
        return [c for c in trainer.lr_scheduler_configs if c.reduce_on_plateau and c.interval == "epoch"]

    def state_dict(self) -> dict[str, Any]:
        if self._trainer is None:
            return {"monitored": dict(self._saved)}
        metrics = self._trainer.callback_metrics
        monitors = {c.monitor for c in self._plateau_configs(self._trainer)}
        return {"monitored": {m: float(metrics[m]) for m in monitors if m in metrics}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._saved = dict(state_dict.get("monitored", {}))
