"""Unsupervised pretraining with denoising autoencoders: dense (the chapter's MLP) and convolutional.

With many unlabelled images and few labelled ones, train an autoencoder to rebuild clean inputs from
corrupted ones, then reuse its encoder under a new output layer and fine-tune on the labels. Today the
whole stack trains at once (:class:`DenoisingAutoencoder`); the historical alternative, greedy
layer-wise pretraining (train one layer as a shallow autoencoder, freeze it, train the next one on
its codes, ...), is :func:`fit_greedy_layerwise`.

Batches are whatever an image DataModule yields, ``(x, y)``: the labels are ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from ltrain.errors import LtrainError
from ltrain.models.activations import make_activation
from ltrain.models.init import init_weights
from ltrain.modules.pretext import PretextModule
from ltrain.optim.lr_scheduler import LRSchedulerConfig

NOISES = ("gaussian", "dropout", "none")


def corrupt(x: torch.Tensor, noise: str, level: float) -> torch.Tensor:
    """Gaussian noise of std ``level`` (inputs are standardised), or drop (zero) a ``level`` share of inputs."""
    if noise == "gaussian":
        return x + level * torch.randn_like(x)
    if noise == "dropout":
        return F.dropout(x, p=level, training=True) * (1 - level)  # zeroed inputs, kept inputs unscaled
    return x


class DenoisingAutoencoder(PretextModule):
    """Reconstruct the clean input from a corrupted copy (MSE); exposes ``.encoder`` for reuse.

    Args:
        encoder, decoder: ``decoder(encoder(x))`` must have x's shape (see :func:`dense_decoder`,
            :func:`conv_autoencoder`).
        optimizer: a partial taking the parameters.
        noise: "gaussian", "dropout" or "none" (a plain autoencoder).
        noise_level: the Gaussian std, or the dropped share of inputs.
        frozen_input: a frozen module applied to the batch first; its output is what gets corrupted and
            rebuilt (greedy layer-wise pretraining trains one layer on the codes of those below).
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        noise: str = "gaussian",
        noise_level: float = 0.3,
        frozen_input: nn.Module | None = None,
        scheduler: LRSchedulerConfig | None = None,
    ):
        super().__init__()
        if noise not in NOISES:
            raise LtrainError(f"autoencoder noise={noise!r} is not one of {list(NOISES)}")
        if noise_level < 0 or (noise == "dropout" and noise_level >= 1):
            raise LtrainError(f"autoencoder noise_level={noise_level} is out of range for noise={noise}")
        self.encoder, self.decoder = encoder, decoder
        self.noise, self.noise_level = noise, noise_level
        self.frozen_input = frozen_input
        if frozen_input is not None:
            frozen_input.requires_grad_(False).eval()
        self.optimizer_factory, self.scheduler_config = optimizer, scheduler

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """What the autoencoder rebuilds: the input, or its frozen lower layers' codes."""
        if self.frozen_input is None:
            return x
        with torch.no_grad():
            return self.frozen_input.eval()(x)

    def step(self, batch, batch_idx: int, stage: str) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        clean = self.target(x)
        noisy = corrupt(clean, self.noise, self.noise_level) if stage == "train" else clean
        loss = F.mse_loss(self(noisy), clean)
        self.log_stage(stage, loss)
        return loss

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("frozen_input.")]


def dense_decoder(
    code_dim: int,
    hidden: Sequence[int],
    output_shape: Sequence[int],
    activation: str = "elu",
    init: str | None = "he_normal",
) -> nn.Sequential:
    """The mirror of an MLP encoder: ``code_dim`` -> ``hidden`` (e.g. the encoder's widths reversed,
    without the code layer) -> a linear layer to prod(output_shape), reshaped to ``output_shape``."""
    layers: list[nn.Module] = []
    width = code_dim
    for units in hidden:
        layers += [nn.Linear(width, units), make_activation(activation)]
        width = units
    out = 1
    for s in output_shape:
        out *= int(s)
    layers += [nn.Linear(width, out), nn.Unflatten(1, tuple(int(s) for s in output_shape))]
    return init_weights(nn.Sequential(*layers), init)


def conv_autoencoder(
    in_chans: int = 1, widths: Sequence[int] = (32, 64), activation: str = "elu"
) -> tuple[nn.Sequential, nn.Sequential]:
    """(encoder, decoder) of a small convolutional autoencoder: each width halves the image size with a
    stride-2 3x3 conv; the decoder mirrors it with transposed convs (28 -> 14 -> 7 -> 14 -> 28)."""
    if not widths:
        raise LtrainError("conv_autoencoder needs at least one width")
    enc: list[nn.Module] = []
    c = in_chans
    for w in widths:
        enc += [nn.Conv2d(c, w, 3, stride=2, padding=1), make_activation(activation)]
        c = w
    dec: list[nn.Module] = []
    for w in [*reversed(widths[:-1]), in_chans]:
        dec += [nn.ConvTranspose2d(c, w, 3, stride=2, padding=1, output_padding=1), make_activation(activation)]
        c = w
    dec.pop()  # linear output: standardised pixels are not bounded
    return init_weights(nn.Sequential(*enc), "he_normal"), init_weights(nn.Sequential(*dec), "he_normal")


def mlp_blocks(model: nn.Sequential) -> list[tuple[nn.Module, int, int]]:
    """``(block, in_width, out_width)`` of each ``hidden*`` block of a build_mlp network, bottom to top."""
    blocks = []
    for name, block in model.named_children():
        if name.startswith("hidden"):
            linear = block.linear
            blocks.append((block, linear.in_features, linear.out_features))
    if not blocks:
        raise LtrainError("greedy layer-wise pretraining needs a build_mlp network with hidden* blocks")
    return blocks


def fit_greedy_layerwise(
    model: nn.Sequential,
    data: L.LightningDataModule | Any,
    make_trainer: Callable[[int], L.Trainer],
    optimizer: Callable[..., torch.optim.Optimizer],
    noise: str = "gaussian",
    noise_level: float = 0.3,
) -> list[dict[str, float]]:
    """Greedy layer-wise pretraining of a build_mlp network's hidden blocks, in place.

    ``data`` is a DataModule or a train DataLoader of image batches. Stage k trains hidden block k as a one-layer denoising autoencoder (a fresh linear decoder) on the
    codes of blocks 0..k-1, which are frozen; ``make_trainer(k)`` gives that stage's Trainer. The
    blocks are left trainable afterwards (the caller decides what to freeze when fine-tuning).
    Returns each stage's last logged metrics.
    """
    blocks = mlp_blocks(model)
    history = []
    for k, (block, width_in, _) in enumerate(blocks):
        below = nn.Sequential(model.flatten, *[b for b, _, _ in blocks[:k]])
        out_width = blocks[k][2]
        module = DenoisingAutoencoder(
            block, nn.Linear(out_width, width_in), optimizer, noise=noise, noise_level=noise_level, frozen_input=below
        )
        trainer = make_trainer(k)
        trainer.fit(module, data)
        history.append({key: float(v) for key, v in trainer.callback_metrics.items()})
    model.requires_grad_(True)
    return history
