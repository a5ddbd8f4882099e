"""Weight initialisers by name: Glorot, He and LeCun (normal/uniform) and variance scaling.

All are variance scaling, sigma^2 = scale / fan (Keras' ``VarianceScaling``): Glorot scale 1 over
fan_avg = (fan_in + fan_out)/2, He scale 2 over fan_in, LeCun scale 1 over fan_in. The uniform
versions draw from [-r, r] with r = sqrt(3 sigma^2), which has the same variance. torch has
``xavier_*`` and ``kaiming_*`` but no fan_avg mode for He/LeCun, no general variance scaling and no
truncation-free LeCun, so the one formula lives here and every scheme is a row of ``SCHEMES``.

``init_weights(model, scheme)`` is the entry point; ``scheme`` is a name (``model.init=lecun_normal``)
or a variance-scaling mapping (``model.init={scale: 2.0, mode: fan_avg, distribution: uniform}``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ltrain.errors import LtrainError, close_matches

MODES = ("fan_in", "fan_out", "fan_avg")
DISTRIBUTIONS = ("normal", "uniform")
# scheme -> (scale, fan mode, distribution); sigma^2 = scale / fan
SCHEMES: dict[str, tuple[float, str, str]] = {
    "glorot_normal": (1.0, "fan_avg", "normal"),
    "glorot_uniform": (1.0, "fan_avg", "uniform"),
    "he_normal": (2.0, "fan_in", "normal"),
    "he_uniform": (2.0, "fan_in", "uniform"),
    "lecun_normal": (1.0, "fan_in", "normal"),
    "lecun_uniform": (1.0, "fan_in", "uniform"),
}
# The layers whose weights are initialised (biases are zeroed); norms and embeddings keep torch's init.
LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a Linear or ConvNd weight (out, in, *kernel)."""
    receptive = math.prod(weight.shape[2:]) if weight.dim() > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def init_variance(weight: torch.Tensor, scale: float = 1.0, mode: str = "fan_in") -> float:
    """sigma^2 = scale / fan, the variance variance scaling gives ``weight``."""
    if mode not in MODES:
        raise LtrainError(f"variance scaling mode {mode!r} is not one of {list(MODES)}")
    fan_in, fan_out = fans(weight)
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    return scale / fan


@torch.no_grad()
def variance_scaling_(
    weight: torch.Tensor, scale: float = 1.0, mode: str = "fan_in", distribution: str = "normal"
) -> torch.Tensor:
    """Fill ``weight`` with variance ``scale / fan`` (fan per ``mode``), normal or uniform r = sqrt(3 sigma^2)."""
    if scale <= 0:
        raise LtrainError(f"variance scaling needs scale > 0, got {scale}")
    var = init_variance(weight, scale, mode)
    if distribution == "normal":
        return weight.normal_(0.0, math.sqrt(var))
    if distribution == "uniform":
        r = math.sqrt(3.0 * var)
        return weight.uniform_(-r, r)
    raise LtrainError(f"distribution {distribution!r} is not one of {list(DISTRIBUTIONS)}")


def resolve_scheme(scheme: str | Mapping[str, Any]) -> tuple[float, str, str]:
    """(scale, mode, distribution) of a scheme name or a ``{scale, mode, distribution}`` mapping."""
    if isinstance(scheme, Mapping):
        unknown = set(scheme) - {"scale", "mode", "distribution"}
        if unknown:
            raise LtrainError(
                f"model.init keys {sorted(unknown)} are not variance-scaling keys; use scale, mode, distribution"
            )
        return float(scheme.get("scale", 1.0)), scheme.get("mode", "fan_in"), scheme.get("distribution", "normal")
    if scheme not in SCHEMES:
        hint = close_matches(str(scheme), SCHEMES)
        raise LtrainError(
            f"unknown initialiser {scheme!r}"
            + (f"; did you mean {hint}?" if hint else "")
            + f" Choices: {sorted(SCHEMES)}, default, or {{scale, mode, distribution}}"
        )
    return SCHEMES[scheme]


def init_weights(model: nn.Module, scheme: str | Mapping[str, Any] | None) -> nn.Module:
    """Initialise every Linear/Conv weight of ``model`` by ``scheme`` and zero their biases.

    ``None``/``"default"``/``"torch"`` keep torch's own initialisation.
    """
    if scheme is None or (isinstance(scheme, str) and scheme in ("default", "torch")):
        return model
    scale, mode, dist = resolve_scheme(scheme)
    for m in model.modules():
        if isinstance(m, LAYER_TYPES):
            variance_scaling_(m.weight, scale, mode, dist)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model
