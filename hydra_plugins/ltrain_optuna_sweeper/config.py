"""The sweeper's config node (``hydra/sweeper=ltrain_optuna``), registered in Hydra's ConfigStore.

This module must not import optuna: Hydra imports every plugin module at start-up, also in environments
without the ``optuna`` extra. Its annotations stay real types (no ``from __future__ import annotations``): Hydra's plugin scan runs the module outside ``sys.modules``, where
dataclasses cannot resolve string annotations, and OmegaConf reads these types to check the config.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

# Each job of a sweep finds this environment variable set to its Optuna trial number (hydra.job.env_set).
TRIAL_NUMBER_ENV = "OPTUNA_TRIAL_NUMBER"


@dataclass
class OptunaSweeperConf:
    """``hydra.sweeper.*``: one Optuna study, asked for ``n_trials`` trials in batches of ``n_jobs``."""

    _target_: str = "hydra_plugins.ltrain_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    # an optuna.samplers class and its arguments, e.g. {_target_: optuna.samplers.TPESampler, seed: 0}
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler"})
    # minimize | maximize, or a list of them for a multi-objective study (the job then returns a list)
    direction: Any = "minimize"
    # an RDB URL: sqlite:///path/optuna.db (one machine), postgresql://... or mysql://... (many workers);
    # null keeps the study in memory, where the jobs cannot reach it (no pruning, nothing kept)
    storage: str | None = None
    # the study's name; an existing study of that name in `storage` is continued
    study_name: str | None = None
    n_trials: int = 20  # trials this sweep adds to the study
    n_jobs: int = 1  # trials asked for at once and handed to the launcher as one batch (parallel workers)
    max_failure_rate: float = 0.0  # the sweep stops when a batch has a larger share of failed jobs
    # the search space, in Hydra's override syntax: {optimizer.lr: "tag(log, interval(1e-5, 1.0))"}
    params: dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="ltrain_optuna", node=OptunaSweeperConf, provider="ltrain")
