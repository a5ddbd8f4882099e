"""A LightningModule that trains any classification network with cross-entropy.

The network is ``self.model`` (a plain ``nn.Module``: timm model or MLP), so callbacks such as
FreezeSchedule can find it; the optimizer and LR scheduler come from config as partials.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from ltrain.errors import LtrainError
from ltrain.modules.mixup import BatchMixup, soft_target_cross_entropy
from ltrain.optim.lr_scheduler import LRSchedulerConfig, optimizers_for


def mse_on_probabilities(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the softmax probabilities and the one-hot targets (the chapter's MSE arm)."""
    return F.mse_loss(logits.softmax(-1), F.one_hot(y, logits.shape[-1]).to(logits.dtype))


LOSSES = {"cross_entropy": F.cross_entropy, "mse": mse_on_probabilities}


class ClassifierModule(L.LightningModule):
    """Cross-entropy classifier with accuracy on train/val/test and optional l1/l2 on weights (not biases).

    Args:
        model: the network; its output is logits of shape (N, num_classes).
        num_classes: number of classes (for the accuracy metrics).
        optimizer: a partial taking the parameter groups, e.g. ``functools.partial(torch.optim.Adam, lr=1e-3)``.
        scheduler: optional LR scheduler config (see :class:`LRSchedulerConfig`).
        l1, l2: penalty weights on parameters with more than one dimension (weights, not biases or BN).
        loss: "cross_entropy" (the default) or "mse" (on softmax probabilities vs one-hot; trains slower).
        mixup: optional :class:`BatchMixup`: training batches are mixed (Mixup/CutMix) and the loss is timm's
            SoftTargetCrossEntropy on the mixed targets; accuracy stays on the hard labels, val/test are
            untouched. Needs ``loss="cross_entropy"`` (the only loss here that takes soft targets).
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: LRSchedulerConfig | None = None,
        l1: float = 0.0,
        l2: float = 0.0,
        loss: str = "cross_entropy",
        mixup: BatchMixup | None = None,
    ):
        super().__init__()
        self.model = model
        self.num_classes = num_classes
        self.optimizer_factory = optimizer
        self.scheduler_config = scheduler
        self.l1, self.l2 = l1, l2
        if loss not in LOSSES:
            raise LtrainError(f"loss={loss!r} is not one of {sorted(LOSSES)}")
        self.loss_name = loss
        if mixup is not None and loss != "cross_entropy":
            raise LtrainError(
                f"mixup trains on soft (mixed) targets, which loss={loss!r} does not take: "
                "use loss=cross_entropy (timm's SoftTargetCrossEntropy on the mixed targets) or mixup=null"
            )
        self.mixup = mixup.bind(num_classes) if mixup is not None else None
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def weight_penalty(self) -> torch.Tensor:
        """l1 * sum|w| + l2 * sum w^2 over weights only (biases and 1-D parameters are not penalised)."""
        penalty = torch.zeros((), device=self.device)
        if self.l1 == 0 and self.l2 == 0:
            return penalty
        for p in self.model.parameters():
            if p.requires_grad and p.ndim > 1:
                if self.l1:
                    penalty = penalty + self.l1 * p.abs().sum()
                if self.l2:
                    penalty = penalty + self.l2 * p.pow(2).sum()
        return penalty

    @property
    def mixes_inputs(self) -> bool:
        """True when training inputs are mixed: a feature cache of unmixed inputs would be wrong (it refuses)."""
        return self.mixup is not None

    def _step(self, batch, stage: str, metric, batch_idx: int = 0) -> torch.Tensor:
        x, y = batch
        if stage == "train" and self.mixup is not None:
            x, soft = self.mixup(x, y, self.current_epoch, batch_idx, self.global_rank)
            logits = self(x)
            loss = soft_target_cross_entropy(logits, soft)
        else:
            logits = self(x)
            loss = LOSSES[self.loss_name](logits, y)
        metric(logits, y)  # hard labels, also on mixed training batches
        on_step = stage == "train"
        self.log(
            f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=stage != "train", sync_dist=not on_step
        )
        self.log(f"{stage}/acc", metric, on_step=False, on_epoch=True, prog_bar=stage != "train")
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train", self.train_acc, batch_idx) + self.weight_penalty()

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val", self.val_acc)

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test", self.test_acc)

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(x).softmax(-1)

    def param_groups(self) -> list[dict[str, Any]]:
        """The optimizer's parameter groups (one group by default; freeze schedules may split it)."""
        return [{"params": list(self.model.parameters())}]

    def configure_optimizers(self):
        return optimizers_for(self.trainer, self.param_groups(), self.optimizer_factory, self.scheduler_config)
