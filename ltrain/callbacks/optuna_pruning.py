"""Prune bad trials of a Hydra Optuna sweep early, with Optuna's own pruners.

Why this exists: Hydra's Optuna sweeper asks Optuna for trials and launches them as ordinary jobs, so
the job never holds the ``optuna.Trial`` that ``trial.report`` / ``trial.should_prune`` need, and
optuna's ``PyTorchLightningPruningCallback`` targets the old ``pytorch_lightning`` package and raises
``TrialPruned``, which the sweeper records as a failed job (a sweep aborts at its first failure by
default). This callback finds its trial in the study's shared storage (the one whose parameters are
this job's overrides), reports the monitored metric after every validation, and when the pruner says
so stops training cleanly: the job returns the best value it reached, which the sweeper records, and
its results.json says where it was pruned.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L

from ltrain.errors import LtrainError

log = logging.getLogger(__name__)


class OptunaPruning(L.Callback):
    """Report ``monitor`` to this job's Optuna trial each epoch; stop when the pruner prunes it.

    Args:
        storage: the sweep's Optuna storage URL (``hydra.sweeper.storage``); in-memory studies cannot be shared.
        study_name: the sweep's study (``hydra.sweeper.study_name``).
        monitor: the metric the sweep optimises, e.g. ``val/acc``.
        pruner: an ``optuna.pruners`` instance (default: ``MedianPruner(n_startup_trials=3, n_warmup_steps=1)``).
    """

    def __init__(self, storage: str | None, study_name: str, monitor: str = "val/acc", pruner: Any = None) -> None:
        if not storage:
            raise LtrainError(
                "Optuna pruning needs the sweep's study in a storage the jobs can read: set "
                "hydra.sweeper.storage (hparams_search configs use an SQLite file in the sweep directory)"
            )
        self.storage, self.study_name, self.monitor, self.pruner = storage, study_name, monitor, pruner
        self.pruned_at_epoch: int | None = None
        self._trial = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self._trial = self._find_trial()

    def _find_trial(self):
        import optuna
        from hydra.core.hydra_config import HydraConfig

        pruner = self.pruner or optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
        study = optuna.load_study(study_name=self.study_name, storage=self.storage, pruner=pruner)
        overrides = set(HydraConfig.get().overrides.task) if HydraConfig.initialized() else set()
        running = [
            t
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
            if all(f"{k}={v}" in overrides for k, v in t.params.items())
        ]
        if len(running) != 1:
            raise LtrainError(
                f"Optuna pruning: found {len(running)} running trials of study {self.study_name!r} in "
                f"{self.storage} with this job's parameters ({sorted(overrides)}); run it inside the "
                "sweep (ltrain -m hparams_search=...) or drop callbacks.optuna_pruning"
            )
        return optuna.trial.Trial(study, running[0]._trial_id)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        prune = False
        if trainer.is_global_zero and self._trial is not None and self.monitor in trainer.callback_metrics:
            self._trial.report(float(trainer.callback_metrics[self.monitor]), step=trainer.current_epoch)
            prune = self._trial.should_prune()
        if trainer.strategy.broadcast(prune, src=0):  # every rank stops together
            self.pruned_at_epoch = trainer.current_epoch
            trainer.should_stop = True
            log.info(
                "Optuna pruned this trial after epoch %d (%s below the median of earlier trials)",
                trainer.current_epoch,
                self.monitor,
            )

    def summary(self) -> dict[str, Any]:
        """What results.json records about pruning."""
        return {"pruned_at_epoch": self.pruned_at_epoch}
