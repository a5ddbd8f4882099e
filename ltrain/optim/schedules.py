"""The learning-rate schedules of the chapter that torch lacks, written as torch LR schedulers.

torch already has the rest, so configs use it directly: performance scheduling is
``ReduceLROnPlateau``, 1cycle is ``OneCycleLR(three_phase=True, anneal_strategy="linear",
div_factor=10)`` (eta_0 -> eta_1 -> eta_0 linearly, then the annihilation phase; momentum
0.95 -> 0.85 -> 0.95). What is missing:

- power scheduling eta_0 / (1 + t/s)^c (torch's ``PolynomialLR`` is (1 - t/T)^p, a different curve);
- exponential scheduling written with the book's s, eta_0 * 0.1^(t/s) (``ExponentialLR`` with
  gamma = 0.1^(1/s));
- piecewise constant scheduling with arbitrary factors per interval (``MultiStepLR`` only
  multiplies by one fixed gamma).

All are closed-form in the scheduler's step counter, which Lightning saves in the checkpoint, so a
resumed run continues the same sequence.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import ExponentialLR, LambdaLR, LRScheduler

from ltrain.errors import LtrainError


class PowerLR(LRScheduler):
    """Power scheduling: lr(t) = base_lr / (1 + t / decay_steps) ** power (the book's s and c).

    Example::

        scheduler = PowerLR(optimizer, decay_steps=1000, power=1.0)  # halves the LR after 1,000 steps
    """

    def __init__(self, optimizer: Optimizer, decay_steps: float, power: float = 1.0, last_epoch: int = -1):
        if decay_steps <= 0:
            raise LtrainError(f"power scheduling needs decay_steps (s) > 0, got {decay_steps}")
        self.decay_steps = float(decay_steps)
        self.power = float(power)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return self._get_closed_form_lr()

    def _get_closed_form_lr(self) -> list[float]:
        factor = (1.0 + self.last_epoch / self.decay_steps) ** self.power
        return [base_lr / factor for base_lr in self.base_lrs]


def exponential_lr(
    optimizer: Optimizer, decay_steps: float, decay_rate: float = 0.1, last_epoch: int = -1
) -> ExponentialLR:
    """Exponential scheduling lr(t) = base_lr * decay_rate ** (t / decay_steps): torch's ExponentialLR
    with gamma = decay_rate ** (1 / decay_steps), so the LR falls 10x every ``decay_steps`` (the book's s)."""
    if decay_steps <= 0 or not 0 < decay_rate <= 1:
        raise LtrainError(
            f"exponential scheduling needs decay_steps > 0 and 0 < decay_rate <= 1, got {decay_steps}, {decay_rate}"
        )
    return ExponentialLR(optimizer, gamma=decay_rate ** (1.0 / decay_steps), last_epoch=last_epoch)


class PiecewiseConstant:
    """The LR factor of step/epoch t: ``factors[i]`` for boundaries[i-1] <= t < boundaries[i].

    A callable object (not a lambda), so LambdaLR can save it in its state_dict.
    """

    def __init__(self, boundaries: Sequence[int], factors: Sequence[float]):
        if len(factors) != len(boundaries) + 1:
            raise LtrainError(
                f"piecewise constant scheduling needs one more factor than boundaries, got "
                f"{len(boundaries)} boundaries and {len(factors)} factors"
            )
        if list(boundaries) != sorted(boundaries):
            raise LtrainError(f"piecewise constant boundaries must increase, got {list(boundaries)}")
        self.boundaries = [int(b) for b in boundaries]
        self.factors = [float(f) for f in factors]

    def __call__(self, t: int) -> float:
        return self.factors[bisect.bisect_right(self.boundaries, t)]


def piecewise_constant_lr(
    optimizer: Optimizer, boundaries: Sequence[int], factors: Sequence[float], last_epoch: int = -1
) -> LambdaLR:
    """Piecewise constant scheduling: lr(t) = base_lr * factors[i] between consecutive ``boundaries``.

    The book's "0.01 for 5 epochs, 0.005 for 10, then 0.001" is base_lr 0.01, boundaries [5, 15],
    factors [1, 0.5, 0.1] stepped per epoch.
    """
    return LambdaLR(optimizer, PiecewiseConstant(boundaries, factors), last_epoch=last_epoch)
