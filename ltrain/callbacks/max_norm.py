"""Max-norm regularisation as a Lightning callback: after every optimizer step, each neuron's incoming
weight vector is rescaled so that ||w||_2 <= r.

torch has the operation (``torch.renorm``) but nothing applies it after each step; Keras has it as
a kernel constraint. A neuron's incoming weights are one row of a Linear weight (out, in) and one
output channel's whole kernel of a ConvNd weight (out, in/groups, *kernel): the norm runs over
in_channels x kh x kw. Every rank holds the same weights after a DDP step, so every rank rescales
identically and nothing needs to be reduced.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from ltrain.errors import LtrainError

LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@torch.no_grad()
def apply_max_norm(model: nn.Module, max_norm: float, exclude: Sequence[str] = ()) -> int:
    """Rescale every Linear/Conv neuron of ``model`` whose incoming weight norm exceeds ``max_norm``.

    Returns how many layers were visited. ``exclude`` holds fnmatch patterns of module names to skip.
    """
    visited = 0
    for name, module in model.named_modules():
        if isinstance(module, LAYER_TYPES) and not any(fnmatch.fnmatch(name, p) for p in exclude):
            # dim 0 is the output neuron / channel: renorm caps the norm of each weight[i] (all other axes)
            module.weight.copy_(torch.renorm(module.weight, p=2, dim=0, maxnorm=max_norm))
            visited += 1
    return visited


def incoming_weight_norms(module: nn.Module) -> torch.Tensor:
    """The l2 norm of each neuron's incoming weights: one per Linear row or ConvNd output channel."""
    return module.weight.detach().flatten(1).norm(dim=1)


class MaxNorm(Callback):
    """Keep every neuron's incoming weights inside the l2 ball of radius ``max_norm`` after each step.

    Args:
        max_norm: r, the largest allowed norm (the book uses values like 1, 2 or 3).
        exclude: fnmatch patterns of module names (as in ``model.named_modules()``) left unconstrained,
            e.g. ``["head"]``.

    Example::

        trainer = L.Trainer(callbacks=[MaxNorm(max_norm=3.0)])
    """

    def __init__(self, max_norm: float = 3.0, exclude: Sequence[str] = ()):
        if not max_norm > 0:
            raise LtrainError(f"MaxNorm needs max_norm > 0 (the radius r), got {max_norm}")
        self.max_norm = float(max_norm)
        self.exclude = tuple(exclude)
        self._last_step = -1

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = trainer.global_step
        if not apply_max_norm(pl_module, self.max_norm, self.exclude):
            raise LtrainError("MaxNorm found no Linear or Conv layer to constrain (check callbacks.max_norm.exclude)")

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # global_step counts optimizer steps: it does not move on accumulation-only batches
        if trainer.global_step != self._last_step:
            self._last_step = trainer.global_step
            apply_max_norm(pl_module, self.max_norm, self.exclude)
