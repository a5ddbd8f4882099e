"""Uncertainty and calibration metrics for predicted class probabilities.

Per-input and per-batch formulas for MC dropout: NLL and Brier score on probabilities (not logits),
predictive and expected entropy (their difference is the mutual information, BALD). The metrics of a
whole split, exact under DDP, are :class:`ltrain.inference.evaluation.CalibrationMetrics`.
"""

from __future__ import annotations

import torch

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
