"""Helpers for the transfer tests: the embedded digits, a LightningModule that is NOT ltrain's, a Trainer."""

from __future__ import annotations

import functools

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from ltrain.data import MnistEmbedded
from ltrain.models import build_mlp


class PlainNet(L.LightningModule):
    """A user's own LightningModule: network at ``self.net`` (not ``model``, no ``backbone``)."""

    def __init__(
        self,
        optimizer=None,
        scheduler=None,
        batch_norm: str = "before",
        num_classes: int = 5,
    ):
        super().__init__()
        self.net = build_mlp(28 * 28, num_classes, hidden=(32, 32, 32, 32, 32), batch_norm=batch_norm)
        self.optimizer = optimizer or functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9)
        self.scheduler = scheduler

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", F.cross_entropy(self.net(x), y), sync_dist=True)

    def configure_optimizers(self):
        optimizer = self.optimizer(self.parameters())
        if self.scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler(optimizer, self.trainer)}


def load_digits() -> MnistEmbedded:
    """Real digits 0-4, 40 training images per digit, batches of 20 (10 steps per epoch)."""
    dm = MnistEmbedded(classes=[0, 1, 2, 3, 4], train_per_class=40, batch_size=20, eval_batch_size=200)
    dm.prepare_data()
    dm.setup()
    return dm


def make_trainer(callbacks: list, max_epochs: int, **kwargs) -> L.Trainer:
    """A quiet, deterministic CPU Trainer."""
    defaults = {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": max_epochs,
        "deterministic": True,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    return L.Trainer(callbacks=callbacks, **{**defaults, **kwargs})


def params_of(module: nn.Module, names) -> dict[str, torch.Tensor]:
    named = dict(module.named_parameters())
    return {n: named[n].detach().clone() for n in names}
