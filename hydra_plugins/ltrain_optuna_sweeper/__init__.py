"""A Hydra sweeper for current Optuna (>= 4), shipped with ltrain.

Hydra finds it under the ``hydra_plugins`` namespace; select it with ``hydra/sweeper: ltrain_optuna``
(ltrain's ``hparams_search`` configs do). It replaces hydra-optuna-sweeper, whose last release (1.3) still
requires optuna < 3 and so held SQLAlchemy < 2 and alembic < 1.14 back.
"""
