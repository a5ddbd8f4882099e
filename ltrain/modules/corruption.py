"""Self-supervised "good vs corrupted" discrimination: learn to tell real images from damaged copies.

Half of every batch is corrupted (a random patch erased, Gaussian noise, or a patch pasted from another
image of the batch); a logistic output on the encoder's features says which images were damaged
(label 1 = corrupted, 0 = good). To spot damage the encoder has to model what real images look like,
which is the feature a classifier can reuse (``.encoder``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import BinaryAccuracy

from ltrain.errors import LtrainError
from ltrain.modules.pretext import PretextModule
from ltrain.optim.lr_scheduler import LRSchedulerConfig

CORRUPTIONS = ("erase", "noise", "paste")


def corrupt_images(
    x: torch.Tensor, kind: str, strength: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A corrupted copy of a batch (N, C, H, W) of standardised images.

    erase: a random square of side ``strength`` x the image side set to 0 (the mean);
    noise: Gaussian noise of std ``strength``; paste: the same square copied from another image.
    """
    if kind not in CORRUPTIONS:
        raise LtrainError(f"corruption {kind!r} is not one of {list(CORRUPTIONS)}")
    n, _, h, w = x.shape
    if kind == "noise":
        return x + strength * torch.randn(x.shape, generator=generator).to(x)
    side_h, side_w = max(1, round(strength * h)), max(1, round(strength * w))
    top = torch.randint(0, h - side_h + 1, (n,), generator=generator)
    left = torch.randint(0, w - side_w + 1, (n,), generator=generator)
    rows = torch.arange(h)[None, :, None]
    cols = torch.arange(w)[None, None, :]
    mask = (
        (rows >= top[:, None, None])
        & (rows < (top + side_h)[:, None, None])
        & (cols >= left[:, None, None])
        & (cols < (left + side_w)[:, None, None])
    )[:, None].to(x.device)
    if kind == "erase":
        return x.masked_fill(mask, 0.0)
    donor = x[torch.roll(torch.arange(n), 1)]  # the previous image of the batch
    return torch.where(mask, donor, x)


class CorruptionDiscriminationModule(PretextModule):
    """Good (0) vs corrupted (1) images from any encoder; batches are ``(x, _)`` (labels ignored).

    Args:
        encoder, feature_dim: the network to pretrain and its output width.
        optimizer: a partial taking the parameters.
        corruption: "erase", "noise" or "paste" (see :func:`corrupt_images`).
        strength: the corruption's size (share of the side) or noise std.
    """

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        optimizer: Callable[..., torch.optim.Optimizer],
        corruption: str = "paste",
        strength: float = 0.4,
        scheduler: LRSchedulerConfig | None = None,
    ):
        super().__init__()
        if corruption not in CORRUPTIONS:
            raise LtrainError(f"corruption={corruption!r} is not one of {list(CORRUPTIONS)}")
        self.encoder = encoder
        self.head = nn.Linear(feature_dim, 1)
        self.corruption, self.strength = corruption, strength
        self.optimizer_factory, self.scheduler_config = optimizer, scheduler
        self.metrics = nn.ModuleDict({s: BinaryAccuracy() for s in ("train_acc", "val_acc")})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logit of "corrupted", shape (N,)."""
        return self.head(self.encoder(x)).squeeze(-1)

    def step(self, batch, batch_idx: int, stage: str) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        gen = None if stage == "train" else torch.Generator().manual_seed(batch_idx)
        bad = (torch.arange(x.shape[0]) % 2 == 1).to(x.device)  # every other image: exactly half
        damaged = corrupt_images(x, self.corruption, self.strength, gen)
        inputs = torch.where(bad[:, None, None, None], damaged, x)
        logit = self(inputs)
        target = bad.float()
        loss = F.binary_cross_entropy_with_logits(logit, target)
        metric = self.metrics[f"{stage}_acc"]
        metric((logit > 0).long(), bad.long())
        self.log_stage(stage, loss, metric)
        return loss
