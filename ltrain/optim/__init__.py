"""Optimizer and LR-schedule plumbing: torch.optim does the work; this wires configs to Lightning and
adds only the schedules torch lacks (see ``schedules``)."""

from ltrain.optim.lr_scheduler import LRSchedulerConfig
from ltrain.optim.schedules import PiecewiseConstant, PowerLR, exponential_lr, piecewise_constant_lr

__all__ = ["LRSchedulerConfig", "PiecewiseConstant", "PowerLR", "exponential_lr", "piecewise_constant_lr"]
