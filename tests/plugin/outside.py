"""LightningModules written the way outside projects write them (not ltrain's ClassifierModule)."""

from __future__ import annotations

import functools

import lightning as L
import timm
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ltrain.data.embedded import load_mnist_embedded


class NetModule(L.LightningModule):
    """A timm (or any) model at ``self.net``, AdamW + OneCycleLR sized by ``estimated_stepping_batches``."""

    def __init__(self, net: nn.Module, lr: float = 1e-2):
        super().__init__()
        self.net, self.lr = net, lr

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr)
        total = self.trainer.estimated_stepping_batches  # builds the train loader before any callback's fit start
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr, total_steps=int(total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class BackboneClassifier(NetModule):
    """Lightning's transfer-learning layout: ``self.backbone`` + ``self.classifier``, no single network."""

    def __init__(self, backbone: nn.Module, classifier: nn.Module, lr: float = 1e-2):
        L.LightningModule.__init__(self)
        self.backbone, self.classifier, self.lr = backbone, classifier, lr

    def forward(self, x):
        return self.classifier(self.backbone(x))


def mlp(seed: int = 0, dropout: float = 0.0) -> nn.Sequential:
    """A plain user MLP on 28x28 digits (no ltrain builder)."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten()]
    width = 784
    for _ in range(3):
        layers += [nn.Linear(width, 48), nn.ReLU()]
        width = 48
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


@functools.cache
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_mnist_embedded()
    return torch.as_tensor(x, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0, torch.as_tensor(y)


def digit_loaders(n_train: int = 192, n_val: int = 64, batch: int = 32) -> tuple[DataLoader, DataLoader]:
    """Real embedded digits as plain TensorDataset loaders, the way a user passes them to ``fit``."""
    x, y = _digits()
    train = TensorDataset(x[:n_train], y[:n_train])
    val = TensorDataset(x[-n_val:], y[-n_val:])
    return DataLoader(train, batch_size=batch, shuffle=True), DataLoader(val, batch_size=64)


def trainer(callbacks: list, epochs: int = 2, **kw) -> L.Trainer:
    defaults = {
        "accelerator": "cpu",
        "max_epochs": epochs,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "deterministic": True,
    }
    return L.Trainer(callbacks=callbacks, **{**defaults, **kw})


def tiny_resnet(seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("test_resnet", **{"num_classes": 10, "in_chans": 1, **kw})


class TransferLearningExample(NetModule):
    """Lightning's docs transfer-learning example (``ImagenetTransferLearning``), with FreezeSchedule swapped in.

    The docs build it as ``layers = list(backbone.children())[:-1]; self.feature_extractor =
    nn.Sequential(*layers); self.classifier = nn.Linear(num_filters, classes)`` and freeze by hand in
    ``forward`` (``self.feature_extractor.eval()`` + ``torch.no_grad()``); those two lines are what a
    FreezeSchedule replaces, so ``forward`` here is the docs' forward without them.
    """

    def __init__(self, backbone: nn.Module, num_target_classes: int = 10, lr: float = 1e-2):
        L.LightningModule.__init__(self)
        num_filters = backbone.fc.in_features
        layers = list(backbone.children())[:-1]
        self.feature_extractor = nn.Sequential(*layers)
        self.classifier = nn.Linear(num_filters, num_target_classes)
        self.lr = lr

    def forward(self, x):
        representations = self.feature_extractor(x).flatten(1)
        return self.classifier(representations)
