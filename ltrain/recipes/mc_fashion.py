"""Recipe ``mc_fashion``: does MC dropout beat the deterministic prediction of the same network?

The book's claim: averaging T predictions with dropout active gives an accuracy "a little higher"
and better-calibrated probabilities than one deterministic pass. This recipe trains the dropout MLP
of ``conf/recipe/mc_fashion.yaml`` on Fashion-MNIST once per seed; the test pass of the best checkpoint
scores it both ways with :class:`ltrain.inference.callback.MCDropoutEvaluation` (the risk_sensitive
preset's callback, settings from the ``mc:`` node): accuracy, expected calibration error, NLL, Brier
score, mean entropy. Over seeds, ``ltrain-report`` gives mean ± std per arm; the per-seed differences
(``mc_minus_det``) say whether the gain is larger than its noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ltrain.errors import LtrainError
from ltrain.inference.callback import MCDropoutEvaluation
from ltrain.train import train

METRICS = ("acc", "ece", "nll", "brier", "entropy")


def run(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train once; the test pass scores deterministic vs MC-dropout predictions on the test split."""
    if not cfg.get("test", True):
        raise LtrainError("recipe=mc_fashion scores the model in the test pass: drop test=false")
    trained = train(cfg, run_dir)
    (evaluation,) = [c for c in trained.trainer.callbacks if isinstance(c, MCDropoutEvaluation)]
    arms = {arm: {f"test_{k}": evaluation.results[arm][k] for k in METRICS} for arm in ("deterministic", "mc_dropout")}
    arms["mc_minus_det"] = {k: arms["mc_dropout"][k] - arms["deterministic"][k] for k in arms["deterministic"]}
    return {
        "recipe": "mc_fashion",
        "arms": arms,
        "samples": evaluation.mc.samples,
        "test_images": evaluation.scored,
        "epochs": trained.results["epochs"],
        "fit_seconds": trained.results["fit_seconds"],
        "best_checkpoint": trained.results["best_checkpoint"],
    }
