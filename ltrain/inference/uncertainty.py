"""Uncertainty and calibration metrics for predicted class probabilities.

torchmetrics provides accuracy and the expected calibration error (``multiclass_accuracy``,
``multiclass_calibration_error``); what it lacks for MC dropout is written here: NLL and Brier score
on probabilities (not logits), predictive and expected entropy (their difference is the mutual
information, BALD), and the per-bin numbers behind a reliability diagram.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_calibration_error

_TINY = 1e-12


def predictive_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of each row of ``probs`` (..., C): 0 for a one-hot row, ln(C) for a uniform one."""
    return -(probs * probs.clamp_min(_TINY).log()).sum(-1)


def expected_entropy(samples: torch.Tensor) -> torch.Tensor:
    """Mean over the sample axis (0) of each sample's entropy: (T, N, C) -> (N,)."""
    return predictive_entropy(samples).mean(0)


def mutual_information(samples: torch.Tensor) -> torch.Tensor:
    """BALD: H[mean over samples] - mean of H[sample], (T, N, C) -> (N,); zero when all samples agree."""
    return (predictive_entropy(samples.mean(0)) - expected_entropy(samples)).clamp_min(0.0)


def nll(probs: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean negative log-likelihood of the true class, from probabilities (clamped away from 0)."""
    return float(-probs.gather(1, targets[:, None]).clamp_min(_TINY).log().mean())


def brier(probs: torch.Tensor, targets: torch.Tensor) -> float:
    """Multi-class Brier score: mean over inputs of sum_c (p_c - onehot_c)^2 (0 best, 2 worst)."""
    onehot = torch.nn.functional.one_hot(targets, probs.shape[1]).to(probs.dtype)
    return float((probs - onehot).pow(2).sum(1).mean())


def classification_metrics(probs: torch.Tensor, targets: torch.Tensor, n_bins: int = 15) -> dict[str, float]:
    """Accuracy, expected calibration error (l1, ``n_bins`` equal-width bins), NLL, Brier, mean entropy."""
    probs, targets = probs.float().cpu(), targets.long().cpu()
    c = probs.shape[1]
    return {
        "acc": float(multiclass_accuracy(probs, targets, num_classes=c, average="micro")),
        "ece": float(multiclass_calibration_error(probs, targets, num_classes=c, n_bins=n_bins, norm="l1")),
        "nll": nll(probs, targets),
        "brier": brier(probs, targets),
        "entropy": float(predictive_entropy(probs).mean()),
    }


def reliability_bins(probs: torch.Tensor, targets: torch.Tensor, n_bins: int = 15) -> dict[str, torch.Tensor]:
    """Per confidence bin (equal width on [0, 1], as torchmetrics bins them): count, mean confidence, accuracy.

    Empty bins have count 0 and NaN confidence/accuracy.
    """
    conf, pred = probs.float().max(1)
    correct = (pred == targets).float()
    idx = torch.clamp((conf * n_bins).ceil().long() - 1, 0, n_bins - 1)  # right-closed bins like torchmetrics
    count = torch.bincount(idx, minlength=n_bins).float()
    conf_sum = torch.zeros(n_bins).index_add_(0, idx, conf)
    acc_sum = torch.zeros(n_bins).index_add_(0, idx, correct)
    nan = torch.full((n_bins,), float("nan"))
    return {
        "edges": torch.linspace(0, 1, n_bins + 1),
        "count": count,
        "confidence": torch.where(count > 0, conf_sum / count.clamp_min(1), nan),
        "accuracy": torch.where(count > 0, acc_sum / count.clamp_min(1), nan),
    }


def ece_from_bins(bins: dict[str, torch.Tensor]) -> float:
    """Expected calibration error from :func:`reliability_bins` (count-weighted |accuracy - confidence|)."""
    ok = bins["count"] > 0
    w = bins["count"][ok] / bins["count"].sum()
    return float((w * (bins["accuracy"][ok] - bins["confidence"][ok]).abs()).sum())
