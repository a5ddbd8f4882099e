"""Self-supervised contrastive pretraining (SimCLR, Chen et al. 2020) for timm CNN trunks (or any encoder).

Each image is augmented twice; a projection MLP maps the encoder's features of both views; the NT-Xent
loss pulls the two views of an image together and pushes the other 2N - 2 views of the batch away.
After pretraining the projection is dropped and ``.encoder`` is reused.

The augmentations run on whole batches of standardised tensors (random resized crop, optional
horizontal flip, brightness/contrast jitter, Gaussian noise), each image with its own random
parameters, so they cost a few tensor ops per batch rather than a Python loop over images.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ltrain.errors import LtrainError
from ltrain.modules.pretext import PretextModule
from ltrain.optim.lr_scheduler import LRSchedulerConfig


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's normalised temperature-scaled cross-entropy for N positive pairs (z1[i], z2[i]).

    Cosine similarities of all 2N projections divided by the temperature; for each view the target is
    its partner among the other 2N - 1 views (itself excluded), averaged over the 2N views.
    """
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2N, D)
    sim = z @ z.T / temperature  # (2N, 2N)
    sim.fill_diagonal_(float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, partner)


@dataclass(frozen=True)
class ContrastiveAugment:
    """SimCLR-style views of a batch (N, C, H, W) of standardised images, per-image random parameters.

    Args:
        crop_scale: range of the area share kept by the random resized crop.
        ratio: range of the crop's aspect ratio (width / height), sampled log-uniformly.
        flip: random horizontal flips (off for digits, where a flip changes meaning; on for clothes).
        jitter: brightness/contrast jitter strength (0 disables it).
        noise: std of added Gaussian noise (0 disables it).
    """

    crop_scale: tuple[float, float] = (0.4, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    jitter: float = 0.4
    noise: float = 0.1

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n = x.shape[0]
        dev, dt = x.device, x.dtype

        def rand(*shape):
            return torch.rand(*shape, generator=generator).to(dev, dt)

        lo, hi = self.crop_scale
        area = lo + (hi - lo) * rand(n)
        r_lo, r_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        log_ratio = r_lo + (r_hi - r_lo) * rand(n)
        ratio = log_ratio.exp()
        sx = (area * ratio).sqrt().clamp(max=1.0)  # crop width / image width
        sy = (area / ratio).sqrt().clamp(max=1.0)
        tx = (1 - sx) * (2 * rand(n) - 1)  # crop centre, in [-1, 1] coordinates
        ty = (1 - sy) * (2 * rand(n) - 1)
        flip = torch.where(rand(n) < 0.5, -1.0, 1.0).to(dev, dt) if self.flip else torch.ones(n, device=dev, dtype=dt)
        theta = torch.zeros(n, 2, 3, device=dev, dtype=dt)
        theta[:, 0, 0], theta[:, 0, 2] = sx * flip, tx
        theta[:, 1, 1], theta[:, 1, 2] = sy, ty
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if self.jitter > 0:
            contrast = 1 + self.jitter * (2 * rand(n, 1, 1, 1) - 1)
            brightness = self.jitter * (2 * rand(n, 1, 1, 1) - 1)
            mean = out.mean(dim=(1, 2, 3), keepdim=True)
            out = (out - mean) * contrast + mean + brightness
        if self.noise > 0:
            out = out + self.noise * torch.randn(out.shape, generator=generator).to(dev, dt)
        return out


def projection_head(feature_dim: int, hidden: int = 128, out: int = 64) -> nn.Sequential:
    """SimCLR's projection g(h): Linear -> ReLU -> Linear."""
    return nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Linear(hidden, out))


class SimCLRModule(PretextModule):
    """SimCLR pretraining of ``encoder`` on unlabelled image batches ``(x, _)``; exposes ``.encoder``.

    Args:
        encoder: e.g. a timm trunk (``timm.create_model(name, num_classes=0)`` or :func:`encoder_of`).
        feature_dim: width of the encoder's output.
        optimizer: a partial taking the parameters.
        temperature: NT-Xent temperature (SimCLR: 0.1-0.5; higher for small batches).
        augment: how views are made (:class:`ContrastiveAugment`).
        projection_hidden, projection_dim: the projection MLP's widths.

    Logged: ``{stage}/loss`` and ``{stage}/acc``, the share of views whose most similar other view is
    their partner (a pretext accuracy, 1/(2N-1) by chance). Validation views use a fixed seed per batch.
    """

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        optimizer: Callable[..., torch.optim.Optimizer],
        temperature: float = 0.5,
        augment: ContrastiveAugment | None = None,
        projection_hidden: int = 128,
        projection_dim: int = 64,
        scheduler: LRSchedulerConfig | None = None,
    ):
        super().__init__()
        if temperature <= 0:
            raise LtrainError(f"SimCLR temperature must be positive, got {temperature}")
        self.encoder = encoder
        self.projection = projection_head(feature_dim, projection_hidden, projection_dim)
        self.temperature = temperature
        self.augment = augment or ContrastiveAugment()
        self.optimizer_factory, self.scheduler_config = optimizer, scheduler

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.encoder(x))

    def step(self, batch, batch_idx: int, stage: str) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        gen = None if stage == "train" else torch.Generator().manual_seed(batch_idx)
        z1, z2 = self(self.augment(x, gen)), self(self.augment(x, gen))
        loss = nt_xent(z1, z2, self.temperature)
        with torch.no_grad():
            z = F.normalize(torch.cat([z1, z2]), dim=1)
            sim = (z @ z.T).fill_diagonal_(float("-inf"))
            n = x.shape[0]
            partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
            acc = (sim.argmax(1) == partner).float().mean()
        self.log_stage(stage, loss, acc)
        return loss
