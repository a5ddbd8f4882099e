"""What the pretext-task modules share (siamese, autoencoder, SimCLR, corruption discrimination).

Each defines one ``step(batch, batch_idx, stage)``; this base routes Lightning's train/val/test hooks to
it, logs ``<stage>/loss`` and ``<stage>/acc`` the same way everywhere (per step in training, per epoch
and synchronised across ranks otherwise), and builds the optimizer and scheduler from config over the
trainable parameters.
"""

from __future__ import annotations

import lightning as L
import torch
from torchmetrics import Metric

from ltrain.optim.lr_scheduler import optimizers_for


class PretextModule(L.LightningModule):
    """A LightningModule whose subclasses set ``optimizer_factory`` / ``scheduler_config`` and define ``step``."""

    optimizer_factory = None
    scheduler_config = None

    def step(self, batch, batch_idx: int, stage: str) -> torch.Tensor:
        raise NotImplementedError

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self.step(batch, batch_idx, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self.step(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self.step(batch, batch_idx, "test")

    def log_stage(self, stage: str, loss: torch.Tensor, acc: torch.Tensor | Metric | None = None) -> None:
        training = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=training, on_epoch=True, prog_bar=not training, sync_dist=not training)
        if acc is not None:  # a torchmetrics Metric synchronises itself
            self.log(
                f"{stage}/acc",
                acc,
                on_step=False,
                on_epoch=True,
                prog_bar=not training,
                sync_dist=not training and not isinstance(acc, Metric),
            )

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self):
        return optimizers_for(self.trainer, self.trainable_parameters(), self.optimizer_factory, self.scheduler_config)
