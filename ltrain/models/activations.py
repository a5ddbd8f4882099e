"""Activations selectable by name (torch's own modules where torch has them).

Extended by the training-toolbox work (issue 4); ``make_activation`` is the stable entry point.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ltrain.errors import LtrainError, close_matches


class Swish(nn.Module):
    """x * sigmoid(beta * x); beta may be learnable (beta=1 is torch's SiLU)."""

    def __init__(self, beta: float = 1.0, learnable: bool = False):
        super().__init__()
        t = torch.tensor(float(beta))
        if learnable:
            self.beta = nn.Parameter(t)
        else:
            self.register_buffer("beta", t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.beta * x)


ACTIVATIONS: dict[str, Callable[..., nn.Module]] = {
    "identity": nn.Identity,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "hardtanh": nn.Hardtanh,
    "softsign": nn.Softsign,
    "relu": nn.ReLU,
    "leaky_relu": lambda alpha=0.01: nn.LeakyReLU(alpha),
    "rrelu": lambda lower=1 / 8, upper=1 / 3: nn.RReLU(lower, upper),
    "prelu": lambda alpha=0.25: nn.PReLU(init=alpha),
    "elu": lambda alpha=1.0: nn.ELU(alpha),
    "selu": nn.SELU,
    "swish": Swish,
}


def make_activation(name: str, **kwargs) -> nn.Module:
    """A fresh activation module by name, e.g. ``make_activation("leaky_relu", alpha=0.2)``."""
    if name not in ACTIVATIONS:
        hint = close_matches(name, ACTIVATIONS)
        raise LtrainError(f"unknown activation {name!r}" + (f"; did you mean {hint}?" if hint else "")
                          + f" Choices: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name](**kwargs)
