"""Lightning callbacks that compose with any LightningModule and any strategy."""

from ltrain.callbacks.cache import FrozenFeatureCache
from ltrain.callbacks.diagnostics import TrainingDiagnostics
from ltrain.callbacks.epoch_seed import EpochSeed
from ltrain.callbacks.freeze import FreezeSchedule, Phase, Plateau
from ltrain.callbacks.max_norm import MaxNorm
from ltrain.callbacks.optuna_pruning import OptunaPruning
from ltrain.callbacks.plateau_resume import ResumePlateauSchedulers

__all__ = [
    "EpochSeed",
    "FreezeSchedule",
    "FrozenFeatureCache",
    "MaxNorm",
    "OptunaPruning",
    "Phase",
    "Plateau",
    "ResumePlateauSchedulers",
    "TrainingDiagnostics",
]
