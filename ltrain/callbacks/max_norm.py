"""Max-norm regularisation as a Lightning callback: after every optimizer step, each neuron's incoming
weight vector is rescaled so that ||w||_2 <= r (trainable weights only).

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
from ltrain.models.network import find_network

LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


TOLERANCE = 1e-6  # relative: a row is rescaled only when its norm exceeds max_norm * (1 + TOLERANCE)


@torch.no_grad()
def apply_max_norm(model: nn.Module, max_norm: float, exclude: Sequence[str] = ()) -> int:
    """Rescale every trainable Linear/Conv neuron of ``model`` whose incoming weight norm exceeds ``max_norm``.

    Returns how many layers were visited. ``exclude`` holds fnmatch patterns of module names to skip; a
    weight with ``requires_grad=False`` (frozen, e.g. pretrained) is never touched. Idempotent: only rows
    whose norm is above ``max_norm`` by more than a relative ``TOLERANCE`` are rescaled (to norm
    ``max_norm``), and nothing is written when no row is, so applying it twice (a resumed run re-applying
    the last step's constraint) changes no bit. ``torch.renorm`` is not: it rescales capped rows again.
    """
    visited = 0
    for name, module in model.named_modules():
        if not isinstance(module, LAYER_TYPES) or any(fnmatch.fnmatch(name, p) for p in exclude):
            continue
        weight = module.weight
        if not weight.requires_grad:
            continue
        visited += 1
        norms = weight.flatten(1).float().norm(dim=1)  # dim 0 is the output neuron / channel
        over = norms > max_norm * (1 + TOLERANCE)
        if over.any():
            rows = over.nonzero().squeeze(1)
            scale = (max_norm / norms[rows]).to(weight.dtype).view(-1, *([1] * (weight.dim() - 1)))
            weight[rows] = weight[rows] * scale
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
        model_attr: the LightningModule attribute holding the network; None finds it
            (:func:`ltrain.models.network.find_network`). Names in ``exclude`` are relative to it.

    The constraint is applied after each optimizer step (Keras' kernel constraint), to trainable weights
    only: frozen weights are not stepped, so nothing is rescaled at fit start and nothing frozen is
    ever rewritten (a feature cache of the frozen layers stays exact). It is idempotent, so a resumed
    run is bit-identical to an uninterrupted one.

    Example::

        trainer = L.Trainer(callbacks=[MaxNorm(max_norm=3.0)])
    """

    def __init__(self, max_norm: float = 3.0, exclude: Sequence[str] = (), model_attr: str | None = None):
        if not max_norm > 0:
            raise LtrainError(f"MaxNorm needs max_norm > 0 (the radius r), got {max_norm}")
        self.max_norm = float(max_norm)
        self.exclude = tuple(exclude)
        self.model_attr = model_attr
        self._last_step = -1

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = trainer.global_step
        net = find_network(pl_module, self.model_attr, "MaxNorm")
        layers = [n for n, m in net.named_modules() if isinstance(m, LAYER_TYPES)]
        if not any(not any(fnmatch.fnmatch(n, p) for p in self.exclude) for n in layers):
            raise LtrainError(
                f"MaxNorm found no Linear or Conv layer to constrain in {type(net).__name__} outside "
                f"exclude={list(self.exclude)} (check callbacks.max_norm.exclude; layers: {layers[:8]})"
            )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # global_step counts optimizer steps: it does not move on accumulation-only batches
        if trainer.global_step != self._last_step:
            self._last_step = trainer.global_step
            apply_max_norm(find_network(pl_module, self.model_attr, "MaxNorm"), self.max_norm, self.exclude)
