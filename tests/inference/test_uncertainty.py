"""Uncertainty and calibration metrics against hand-computed values and torchmetrics."""

from __future__ import annotations

import math

import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from ltrain.inference import (
    CalibrationMetrics,
    brier,
    classification_metrics,
    mutual_information,
    nll,
    predictive_entropy,
)
from ltrain.inference.reliability import plot_reliability


def test_entropy_is_zero_for_one_hot_and_log_c_for_uniform():
    probs = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    torch.testing.assert_close(predictive_entropy(probs), torch.tensor([0.0, math.log(4)]))


def test_mutual_information_is_zero_when_samples_agree_and_ln2_when_two_confident_samples_disagree():
    same = torch.tensor([[[0.7, 0.3]], [[0.7, 0.3]]])
    opposite = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    torch.testing.assert_close(mutual_information(same), torch.zeros(1))
    torch.testing.assert_close(mutual_information(opposite), torch.tensor([math.log(2)]))


def test_nll_and_brier_match_hand_computed_values():
    probs = torch.tensor([[0.5, 0.5], [0.9, 0.1]])
    targets = torch.tensor([0, 1])
    assert math.isclose(nll(probs, targets), -(math.log(0.5) + math.log(0.1)) / 2, rel_tol=1e-6)
    assert math.isclose(brier(probs, targets), (0.25 + 0.25 + 0.81 + 0.81) / 2, rel_tol=1e-6)


def test_calibration_sums_give_torchmetrics_calibration_error_and_the_batch_formulas():
    g = torch.Generator().manual_seed(0)
    probs = torch.randn(2000, 10, generator=g).mul(2).softmax(-1)
    targets = torch.randint(0, 10, (2000,), generator=g)
    m = classification_metrics(probs, targets, n_bins=15)
    reference = float(multiclass_calibration_error(probs, targets, num_classes=10, n_bins=15, norm="l1"))
    assert math.isclose(m["ece"], reference, abs_tol=1e-6)
    assert math.isclose(m["acc"], float((probs.argmax(1) == targets).float().mean()), abs_tol=1e-7)
    assert math.isclose(m["nll"], nll(probs, targets), rel_tol=1e-6)
    assert math.isclose(m["brier"], brier(probs, targets), rel_tol=1e-6)
    assert math.isclose(m["entropy"], float(predictive_entropy(probs).mean()), rel_tol=1e-6)
    assert 0.0 < m["ece"] < 1.0


def test_calibration_metrics_added_batch_by_batch_equal_one_pass_but_mean_of_batch_figures_does_not():
    """The sums make the metric of a split independent of how it is cut (into batches or DDP ranks)."""
    g = torch.Generator().manual_seed(2)
    probs = torch.randn(600, 5, generator=g).mul(3).softmax(-1)
    targets = torch.randint(0, 5, (600,), generator=g)
    whole = classification_metrics(probs, targets)
    metric = CalibrationMetrics(15)
    per_batch = []
    for start in (0, 100, 350):  # uneven pieces
        end = {0: 100, 100: 350, 350: 600}[start]
        metric.update(probs[start:end], targets[start:end])
        per_batch.append(classification_metrics(probs[start:end], targets[start:end])["ece"])
    pieced = metric.compute()
    for k in whole:
        assert math.isclose(pieced[k], whole[k], rel_tol=1e-9, abs_tol=1e-12), k
    assert abs(sum(per_batch) / 3 - whole["ece"]) > 1e-3  # what averaging per-shard figures would report


def test_reliability_diagram_is_written(tmp_path):
    g = torch.Generator().manual_seed(1)
    probs = torch.randn(300, 5, generator=g).softmax(-1)
    targets = torch.randint(0, 5, (300,), generator=g)
    curves = {}
    for label, p in {"a": probs, "b": probs.pow(2) / probs.pow(2).sum(1, keepdim=True)}.items():
        metric = CalibrationMetrics(15)
        metric.update(p, targets)
        curves[label] = metric.bins()
    out = plot_reliability(curves, tmp_path / "rel.png")
    assert out.is_file() and out.stat().st_size > 10_000
