"""Weight initialisers by name: Glorot, He and LeCun (normal/uniform) and variance scaling.

Extended by the training-toolbox work (issue 4); ``init_weights`` is the stable entry point.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ltrain.errors import LtrainError

# scheme -> (scale, fan mode, distribution); sigma^2 = scale / fan  (uniform bound r = sqrt(3 sigma^2))
SCHEMES: dict[str, tuple[float, str, str]] = {
    "glorot_normal": (1.0, "fan_avg", "normal"),
    "glorot_uniform": (1.0, "fan_avg", "uniform"),
    "he_normal": (2.0, "fan_in", "normal"),
    "he_uniform": (2.0, "fan_in", "uniform"),
    "lecun_normal": (1.0, "fan_in", "normal"),
    "lecun_uniform": (1.0, "fan_in", "uniform"),
}


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a Linear or ConvNd weight (out, in, *kernel)."""
    receptive = math.prod(weight.shape[2:]) if weight.dim() > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


@torch.no_grad()
def variance_scaling_(weight: torch.Tensor, scale: float = 1.0, mode: str = "fan_in",
                      distribution: str = "normal") -> torch.Tensor:
    """Fill ``weight`` with variance ``scale / fan`` (fan per ``mode``), normal or uniform."""
    fan_in, fan_out = fans(weight)
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}.get(mode)
    if fan is None:
        raise LtrainError(f"variance scaling mode {mode!r} is not one of fan_in, fan_out, fan_avg")
    var = scale / fan
    if distribution == "normal":
        return weight.normal_(0.0, math.sqrt(var))
    if distribution == "uniform":
        r = math.sqrt(3.0 * var)
        return weight.uniform_(-r, r)
    raise LtrainError(f"distribution {distribution!r} is not one of normal, uniform")


def init_weights(model: nn.Module, scheme: str | None) -> nn.Module:
    """Initialise every Linear/Conv weight of ``model`` by ``scheme`` and zero their biases."""
    if scheme in (None, "default", "torch"):
        return model
    if scheme not in SCHEMES:
        raise LtrainError(f"unknown initialiser {scheme!r}; choices: {sorted(SCHEMES)} or default")
    scale, mode, dist = SCHEMES[scheme]
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            variance_scaling_(m.weight, scale, mode, dist)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model
