"""Hydra's sweeper interface over Optuna's ask-and-tell API, with the study in shared storage.

Hydra gives each job only its overrides, so the sweeper asks Optuna for ``n_jobs`` trials, launches one job
per trial with the trial's parameters as overrides and its trial number in the job's environment
(``OPTUNA_TRIAL_NUMBER``, through ``hydra.job.env_set``), and tells Optuna each job's return value. A job
that shares the study's storage loads its own trial by that number (``ltrain.callbacks.OptunaPruning``
does) to report intermediate values; when the pruner stops it, the job tells Optuna the trial was PRUNED
and the sweeper leaves that state as it is.

The search space is Hydra's sweep syntax, in ``hydra.sweeper.params`` or on the command line:
``choice(a, b)`` (categorical), ``range(1, 10, 2)`` (stepped int or float), ``interval(0.1, 0.5)``
(uniform), ``tag(log, interval(1e-5, 1.0))`` (log-uniform); any other value is passed to every job as is.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.ltrain_optuna_sweeper.config import TRIAL_NUMBER_ENV

log = logging.getLogger(__name__)

DIRECTIONS = ("minimize", "maximize")


def _import_optuna() -> Any:
    try:
        import optuna
    except ImportError as e:
        raise ImportError(
            "hydra/sweeper=ltrain_optuna needs Optuna: pip install 'ltrain[optuna]' (or pip install 'optuna>=4')"
        ) from e
    return optuna


def distribution_of(override: Override) -> Any:
    """The Optuna distribution a sweep override describes, or ``None`` for a plain value (a fixed parameter)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if not override.is_sweep_override():
        return None
    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if override.is_range_sweep():  # Hydra's range excludes `stop`; Optuna's `high` is the last value taken
        values = list(override.sweep_iterator())
        if not values:
            raise ValueError(f"{override.input_line}: an empty range")
        if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
            return IntDistribution(values[0], values[-1], step=value.step)
        return FloatDistribution(float(values[0]), float(values[-1]), step=float(value.step))
    if override.is_interval_sweep():
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise ValueError(f"{override.input_line}: the Optuna sweeper takes choice(), range() or interval() sweeps")


def search_space(arguments: Sequence[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Split override strings into Optuna distributions (the search space) and fixed ``key=value`` pairs."""
    space: dict[str, Any] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(list(arguments)):
        distribution = distribution_of(override)
        if distribution is None:
            fixed[override.get_key_element()] = override.get_value_element_as_str()
        else:
            space[override.get_key_element()] = distribution
    return space, fixed


def _objective_values(returned: Any, n_objectives: int) -> list[float]:
    """A job's return value as the list of floats Optuna's ``tell`` takes; refuses anything else."""
    values = list(returned) if isinstance(returned, (list, tuple)) else [returned]
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError):
        values = []
    if len(values) != n_objectives or any(math.isnan(v) for v in values):
        raise ValueError(
            f"the job returned {returned!r}; an Optuna sweep with {n_objectives} objective(s) needs "
            f"{'a float' if n_objectives == 1 else f'a list of {n_objectives} floats'} from the task function"
        )
    return values


class OptunaSweeper(Sweeper):
    """Ask Optuna for trials, run each as a Hydra job, tell Optuna the results (``hydra/sweeper=ltrain_optuna``)."""

    def __init__(
        self,
        sampler: Any,
        direction: Any,
        storage: str | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        params: DictConfig | dict[str, str] | None,
    ) -> None:
        directions = (
            [str(d) for d in direction]
            if isinstance(direction, Sequence) and not isinstance(direction, str)
            else [str(direction)]
        )
        bad = [d for d in directions if d not in DIRECTIONS]
        if bad:
            raise ValueError(f"hydra.sweeper.direction: {bad} is not one of {list(DIRECTIONS)} (or a list of them)")
        if n_trials < 1 or n_jobs < 1 or not 0.0 <= max_failure_rate <= 1.0:
            raise ValueError(
                f"hydra.sweeper: n_trials ({n_trials}) and n_jobs ({n_jobs}) must be >= 1 and max_failure_rate "
                f"({max_failure_rate}) in [0, 1]"
            )
        self.sampler, self.directions, self.storage, self.study_name = sampler, directions, storage, study_name
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, n_jobs, max_failure_rate
        self.params = dict(params or {})
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        self.job_idx = 0

    def create_study(self) -> Any:
        """The study named ``study_name`` in ``storage``, created if it does not exist yet."""
        optuna = _import_optuna()
        if self.storage and self.storage.startswith("sqlite:///"):  # SQLite creates the file, not its folder
            Path(self.storage.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # Hydra instantiates the sweeper's config recursively, so the sampler usually arrives as an object
        sampler = instantiate(self.sampler) if isinstance(self.sampler, (dict, DictConfig)) else self.sampler
        return optuna.create_study(
            study_name=self.study_name,
            storage=self.storage,
            sampler=sampler,
            directions=self.directions,
            load_if_exists=True,
        )

    def sweep(self, arguments: list[str]) -> None:
        assert self.config is not None and self.launcher is not None, "Hydra calls setup() before sweep()"
        optuna = _import_optuna()
        space, fixed = search_space([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        fixed = {k: v for k, v in fixed.items() if k not in space}
        study = self.create_study()
        log.info(
            "Optuna study %r in %s: %d trials, %s, search space %s",
            study.study_name,
            self.storage or "memory",
            self.n_trials,
            type(study.sampler).__name__,
            {k: repr(d) for k, d in space.items()},
        )
        to_go = self.n_trials
        while to_go > 0:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, to_go))]
            overrides = [
                (
                    *(f"{k}={v}" for k, v in {**trial.params, **fixed}.items()),
                    f"++hydra.job.env_set.{TRIAL_NUMBER_ENV}={trial.number}",
                )
                for trial in trials
            ]
            returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            self.job_idx += len(returns)
            failures = []
            for trial, ret in zip(trials, returns, strict=True):
                try:
                    study.tell(trial, _objective_values(ret.return_value, len(self.directions)), skip_if_finished=True)
                except Exception as e:  # the job raised (ret.return_value re-raises it) or returned no number
                    if self._state(study, trial.number) == optuna.trial.TrialState.PRUNED:
                        continue  # the job was pruned and said so; what it returned afterwards does not count
                    study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
                    log.warning("Trial %d failed: %s", trial.number, e)
                    failures.append(e)
            if len(failures) / len(returns) > self.max_failure_rate:
                raise RuntimeError(
                    f"{len(failures)} of {len(returns)} jobs failed (hydra.sweeper.max_failure_rate="
                    f"{self.max_failure_rate}); the first failure follows"
                ) from failures[0]
            to_go -= len(trials)
        self._save_results(study)

    @staticmethod
    def _state(study: Any, number: int) -> Any:
        return next(t.state for t in study.get_trials(deepcopy=False) if t.number == number)

    def _save_results(self, study: Any) -> None:
        """``optimization_results.yaml`` in the sweep directory: the best trial (or the Pareto front)."""
        optuna = _import_optuna()
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        results: dict[str, Any] = {"name": "optuna", "study_name": study.study_name, "n_complete": len(complete)}
        if complete and len(self.directions) == 1:
            results.update(best_params=study.best_trial.params, best_value=study.best_trial.value)
            log.info("Best parameters: %s (value %s)", study.best_trial.params, study.best_trial.value)
        elif complete:
            results["solutions"] = [{"params": t.params, "values": t.values} for t in study.best_trials]
        else:
            log.warning("No trial of study %r completed (all pruned or failed)", study.study_name)
        assert self.config is not None
        out = Path(self.config.hydra.sweep.dir)
        out.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), out / "optimization_results.yaml")
