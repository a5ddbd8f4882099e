"""Optimizer and LR-schedule plumbing: torch.optim does the work; this only wires configs to Lightning."""

from ltrain.optim.lr_scheduler import LRSchedulerConfig

__all__ = ["LRSchedulerConfig"]
