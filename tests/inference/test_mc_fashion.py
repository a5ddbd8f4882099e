"""Recipe mc_fashion: deterministic vs MC-dropout predictions of a dropout MLP on Fashion-MNIST."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from ltrain.recipes import run_recipe
from tests.conftest import compose_config

pytestmark = pytest.mark.fashion_mnist  # reads the real Fashion-MNIST files (make test installs them)

METRICS = ("test_acc", "test_ece", "test_nll", "test_brier", "test_entropy")


def test_mc_fashion_smoke_scores_both_arms_and_writes_the_reliability_diagram(tmp_path):
    cfg = compose_config(
        "recipe=mc_fashion",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=20",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=3",
        "data.eval_batch_size=100",
        "data.train_per_class=300",
        "mc.samples=5",
    )
    results = run_recipe(cfg, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["recipe"] == "mc_fashion" and saved["test_images"] == 300 and saved["samples"] == 5
    arms = saved["arms"]
    assert set(arms) == {"deterministic", "mc_dropout", "mc_minus_det"}
    for arm in ("deterministic", "mc_dropout"):
        assert set(arms[arm]) == set(METRICS)
        assert 0.4 < arms[arm]["test_acc"] <= 1.0  # 20 steps already far above chance (0.1)
    for k in METRICS:
        assert math.isclose(arms["mc_minus_det"][k], arms["mc_dropout"][k] - arms["deterministic"][k], abs_tol=1e-9)
    assert arms["mc_dropout"]["test_entropy"] > arms["deterministic"]["test_entropy"]  # averaging spreads mass
    assert (tmp_path / "reliability.png").is_file() and results["arms"] == arms


@pytest.mark.slow
def test_mc_fashion_over_five_seeds_softens_the_probabilities_without_losing_accuracy(tmp_path):
    """The full recipe (conf/recipe/mc_fashion.yaml, 4 epochs, T=30, all 10,000 test images), seeds 0-4.

    The book: MC dropout gives "a little higher" accuracy and better-calibrated probabilities. What held over
    two draws of seeds (README's mc_fashion table): the mean entropy rises on every seed and accuracy stays
    within 0.5 points. The calibration gain did NOT hold: one 5-seed run halved the mean ECE, the rerun after
    ltrain's seeds were re-derived moved it by -0.002 ± 0.009 and NLL by +0.0001, so it is not asserted.
    """
    diffs = []
    for seed in range(5):
        cfg = compose_config("recipe=mc_fashion", f"seed={seed}", shrink=False)
        cfg.trainer.enable_progress_bar = False
        diffs.append(run_recipe(cfg, tmp_path / str(seed))["arms"]["mc_minus_det"])
    mean = {k: statistics.fmean(d[k] for d in diffs) for k in METRICS}
    print({k: f"{v:+.4f} ± {statistics.stdev(d[k] for d in diffs):.4f}" for k, v in mean.items()})
    assert all(d["test_entropy"] > 0 for d in diffs)
    assert abs(mean["test_acc"]) < 0.005
