"""Predictions with uncertainty: MC dropout (every dropout active, all else in eval) and its metrics."""

from ltrain.inference.evaluation import (
    CalibrationMetrics,
    MCSettings,
    classification_metrics,
    has_dropout,
    predict_batch,
)
from ltrain.inference.mc_dropout import MCPrediction, eval_mode_restored, mc_dropout
from ltrain.inference.sites import DropoutSite, module_sites
from ltrain.inference.uncertainty import brier, expected_entropy, mutual_information, nll, predictive_entropy

__all__ = [
    "CalibrationMetrics",
    "DropoutSite",
    "MCPrediction",
    "MCSettings",
    "brier",
    "classification_metrics",
    "eval_mode_restored",
    "expected_entropy",
    "has_dropout",
    "mc_dropout",
    "module_sites",
    "mutual_information",
    "nll",
    "predict_batch",
    "predictive_entropy",
]
