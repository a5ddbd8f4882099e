"""Activations selectable by name: torch's own modules where torch has them, and the few it lacks.

torch provides sigmoid, tanh, hardtanh, softsign, ReLU, leaky ReLU, RReLU, PReLU, ELU and SELU; this
module adds only arctan, bent identity, Swish with a (learnable) beta and maxout. ``make_activation``
is the entry point ``build_mlp`` uses: ``make_activation("leaky_relu", alpha=0.2)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ltrain.errors import LtrainError, close_matches


class Arctan(nn.Module):
    """arctan(x): a sigmoid-shaped activation with range (-pi/2, pi/2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.atan(x)


class BentIdentity(nn.Module):
    """(sqrt(x^2 + 1) - 1) / 2 + x: smooth, unbounded, slope 1/2 for x -> -inf and 3/2 for x -> +inf."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (torch.sqrt(x * x + 1) - 1) / 2 + x


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


class Maxout(nn.Module):
    """The max of ``k`` linear pieces per unit: (N, units*k, ...) -> (N, units, ...).

    The layer before produces the k pieces of every unit (``pieces`` tells ``build_mlp`` to make that
    layer k times wider, hence maxout's k-fold parameters); piece j of unit u is feature u*k + j.
    """

    def __init__(self, k: int = 2):
        super().__init__()
        if int(k) < 1:
            raise LtrainError(f"maxout needs k >= 1 linear pieces per unit, got k={k}")
        self.pieces = int(k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, features, *rest = x.shape
        if features % self.pieces:
            raise LtrainError(f"maxout(k={self.pieces}) got {features} features, not a multiple of k")
        # (N, units*k, ...) -> (N, units, k, ...) -> max over the k pieces
        return x.view(n, features // self.pieces, self.pieces, *rest).amax(dim=2)

    def extra_repr(self) -> str:
        return f"k={self.pieces}"


ACTIVATIONS: dict[str, Callable[..., nn.Module]] = {
    "identity": nn.Identity,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "hardtanh": lambda min_val=-1.0, max_val=1.0: nn.Hardtanh(min_val, max_val),
    "softsign": nn.Softsign,
    "arctan": Arctan,
    "bent_identity": BentIdentity,
    "relu": nn.ReLU,
    "leaky_relu": lambda alpha=0.01: nn.LeakyReLU(alpha),
    "rrelu": lambda lower=1 / 8, upper=1 / 3: nn.RReLU(lower, upper),
    "prelu": lambda alpha=0.25, num_parameters=1: nn.PReLU(num_parameters=num_parameters, init=alpha),
    "elu": lambda alpha=1.0: nn.ELU(alpha),
    "selu": nn.SELU,
    "swish": Swish,
    "maxout": Maxout,
}


def make_activation(name: str, **kwargs) -> nn.Module:
    """A fresh activation module by name, e.g. ``make_activation("leaky_relu", alpha=0.2)``."""
    if name not in ACTIVATIONS:
        hint = close_matches(name, ACTIVATIONS)
        raise LtrainError(
            f"unknown activation {name!r}"
            + (f"; did you mean {hint}?" if hint else "")
            + f" Choices: {sorted(ACTIVATIONS)}"
        )
    try:
        return ACTIVATIONS[name](**kwargs)
    except TypeError as e:
        raise LtrainError(f"activation {name!r} does not take {sorted(kwargs)} (model.activation_kwargs): {e}") from e


def pieces_per_unit(activation: nn.Module) -> int:
    """How many inputs per output unit the activation consumes (k for maxout, 1 for the others)."""
    return getattr(activation, "pieces", 1)
