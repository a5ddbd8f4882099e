"""Uncertainty and calibration metrics against hand-computed values and torchmetrics."""

from __future__ import annotations

import math

import torch

from ltrain.inference import brier, classification_metrics, mutual_information, nll, predictive_entropy
from ltrain.inference.reliability import plot_reliability
from ltrain.inference.uncertainty import ece_from_bins, reliability_bins


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


def test_reliability_bins_give_torchmetrics_calibration_error():
    g = torch.Generator().manual_seed(0)
    probs = torch.randn(2000, 10, generator=g).mul(2).softmax(-1)
    targets = torch.randint(0, 10, (2000,), generator=g)
    m = classification_metrics(probs, targets, n_bins=15)
    assert math.isclose(ece_from_bins(reliability_bins(probs, targets, 15)), m["ece"], abs_tol=1e-5)
    assert math.isclose(m["acc"], float((probs.argmax(1) == targets).float().mean()), abs_tol=1e-7)
    assert 0.0 < m["ece"] < 1.0 and m["nll"] > 0 and 0 <= m["brier"] <= 2


def test_reliability_diagram_is_written(tmp_path):
    g = torch.Generator().manual_seed(1)
    probs = torch.randn(300, 5, generator=g).softmax(-1)
    targets = torch.randint(0, 5, (300,), generator=g)
    out = plot_reliability(
        {"a": probs, "b": probs.pow(2) / probs.pow(2).sum(1, keepdim=True)}, targets, tmp_path / "rel.png"
    )
    assert out.is_file() and out.stat().st_size > 10_000
