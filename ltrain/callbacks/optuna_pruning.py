"""Prune bad trials of an Optuna sweep early, with Optuna's own pruners, from inside the job.

Why this exists: in a Hydra sweep the job is a separate run (often a separate process or SLURM job), so
nobody hands it the ``optuna.Trial`` that ``trial.report`` / ``trial.should_prune`` need; and
optuna-integration's ``PyTorchLightningPruningCallback`` raises ``TrialPruned`` out of ``trainer.fit``,
which would end the job before its checkpoint, test and ``results.json``. ltrain's sweeper
(``hydra/sweeper=ltrain_optuna``) puts the trial's number in the job's environment
(``OPTUNA_TRIAL_NUMBER``); this callback loads that very trial from the study's shared storage, reports
the monitored metric after every validation, and when the pruner says so tells Optuna the trial is
PRUNED and stops training cleanly: the run still tests its best checkpoint, and its results.json says
where it was pruned.

Example (what ``hparams_search=lr_coarse`` composes)::

    OptunaPruning(storage="sqlite:////runs/sweep/optuna.db", study_name="lr_coarse",
                  trial_number=int(os.environ["OPTUNA_TRIAL_NUMBER"]), monitor="val/acc",
                  pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1))
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
        storage: the study's storage URL (``hydra.sweeper.storage``), one every job can open: SQLite on one
            machine, a PostgreSQL/MySQL URL for many workers. An in-memory study cannot be shared.
        study_name: the study (``hydra.sweeper.study_name``).
        trial_number: this job's trial (the sweeper sets ``OPTUNA_TRIAL_NUMBER``); ``None`` outside a sweep,
            which is refused.
        monitor: the metric reported as the trial's intermediate value, e.g. ``val/acc``.
        pruner: an ``optuna.pruners`` instance (default: ``MedianPruner(n_startup_trials=3, n_warmup_steps=1)``).
    """

    def __init__(
        self,
        storage: str | None,
        study_name: str,
        trial_number: int | str | None = None,
        monitor: str = "val/acc",
        pruner: Any = None,
    ) -> None:
        if not storage:
            raise LtrainError(
                "Optuna pruning needs the sweep's study in a storage the jobs can read: set "
                "hydra.sweeper.storage (hparams_search configs use an SQLite file in the sweep directory)"
            )
        if trial_number is None or not str(trial_number).isdigit():
            raise LtrainError(
                f"Optuna pruning runs inside an Optuna sweep, which gives each job its trial number "
                f"(OPTUNA_TRIAL_NUMBER); this run has {trial_number!r}: start it as a sweep "
                "(ltrain -m hparams_search=lr_coarse) or drop the callback (callbacks.optuna_pruning=null)"
            )
        self.storage, self.study_name, self.trial_number = storage, study_name, int(trial_number)
        self.monitor, self.pruner = monitor, pruner
        self.pruned_at_epoch: int | None = None
        self._study: Any = None
        self._trial: Any = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:  # one rank talks to the study; the others follow its decision
            self._study, self._trial = self._load_trial()

    def _load_trial(self) -> tuple[Any, Any]:
        """The study and this job's RUNNING trial, through Optuna's public storage API."""
        import optuna

        storage = optuna.storages.RDBStorage(self.storage)
        pruner = self.pruner or optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
        study = optuna.load_study(study_name=self.study_name, storage=storage, pruner=pruner)
        try:
            study_id = storage.get_study_id_from_name(self.study_name)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.trial_number)
        except KeyError as e:
            raise LtrainError(
                f"Optuna pruning: study {self.study_name!r} in {self.storage} has no trial {self.trial_number}; "
                "is hydra.sweeper.storage the storage the sweep writes to?"
            ) from e
        state = storage.get_trial(trial_id).state
        if state != optuna.trial.TrialState.RUNNING:
            raise LtrainError(
                f"Optuna pruning: trial {self.trial_number} of study {self.study_name!r} is {state.name}, not "
                "RUNNING; a finished trial cannot be reported to (start a new sweep rather than rerun a job)"
            )
        return study, optuna.trial.Trial(study, trial_id)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.pruned_at_epoch is not None:
            return
        if self.monitor not in trainer.callback_metrics:  # every rank has the same keys: all refuse together
            raise LtrainError(
                f"Optuna pruning monitors {self.monitor!r}, which this run does not log; logged: "
                f"{sorted(trainer.callback_metrics)} (set callbacks.optuna_pruning.monitor)"
            )
        prune = False
        if trainer.is_global_zero:
            self._trial.report(float(trainer.callback_metrics[self.monitor]), step=trainer.current_epoch)
            prune = self._trial.should_prune()
            if prune:  # what Optuna's study.optimize does when the objective raises TrialPruned
                import optuna

                self._study.tell(self.trial_number, state=optuna.trial.TrialState.PRUNED)
        if trainer.strategy.broadcast(prune, src=0):  # every rank stops together
            self.pruned_at_epoch = trainer.current_epoch
            trainer.should_stop = True
            log.info(
                "Optuna pruned trial %d after epoch %d (%s below what the pruner asks of it)",
                self.trial_number,
                trainer.current_epoch,
                self.monitor,
            )

    def summary(self) -> dict[str, Any]:
        """What results.json records about pruning."""
        return {"optuna_trial": self.trial_number, "pruned_at_epoch": self.pruned_at_epoch}
