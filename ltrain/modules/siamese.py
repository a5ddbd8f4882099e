"""Siamese pretraining: learn "are these two images of the same class?" where such labels are cheap.

Two towers embed the two images: one shared encoder by default (the usual siamese network), or two
separate towers A and B as in the book's siamese-MNIST exercise (then ``encoder`` is tower A, the one
a classifier reuses). Their outputs are combined (concatenation as in the book, |a - b|, or a * b)
and fed to one logistic output trained with binary cross-entropy. A linear output on a concatenation
computes f(a) + g(b), which cannot tell "same" from "different" (that needs an interaction of a and
b), so by default a small hidden layer (10 ELU units, as in the book's solution notebook) sits between
the combination and the logistic output; ``head_hidden=0`` removes it. Labels follow
:mod:`ltrain.data.pairs`: 0 = same class, 1 = different, so the output is P(different).

Alternatively ``loss="contrastive"``: the max-margin contrastive loss of Hadsell, Chopra & LeCun
(2006) on the Euclidean distance d of the embeddings (same convention, y = 1 for different):
``(1 - y) d^2 / 2 + y max(0, margin - d)^2 / 2``; a pair is predicted "different" when d > margin / 2.
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

COMBINES: dict[str, tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], int]] = {
    # name -> (how to combine the two embeddings, width multiplier of the result)
    "concat": (lambda a, b: torch.cat([a, b], dim=-1), 2),
    "absdiff": (lambda a, b: (a - b).abs(), 1),
    "product": (lambda a, b: a * b, 1),
}
LOSSES = ("bce", "contrastive")


class SiameseModule(PretextModule):
    """Two towers over any encoder, trained on ``(x_a, x_b, target)`` pair batches (0 = same class).

    Args:
        encoder: the tower (tower A when ``encoder_b`` is given); e.g. from :func:`encoder_of`.
        feature_dim: width of the encoder's output.
        optimizer: a partial taking the parameters, e.g. ``functools.partial(torch.optim.Adam, lr=1e-3)``.
        encoder_b: a separate tower B (same output width); None shares ``encoder`` between both inputs.
        combine: "concat" (the book), "absdiff" or "product" (bce loss only).
        loss: "bce" (one logistic output) or "contrastive" (max-margin on the embedding distance).
        margin: the contrastive loss's margin.
        head_hidden: units of the ELU layer between the combination and the logistic output (0: none).
        scheduler: optional LR scheduler config.

    Example::

        model = build_mlp(784, 10)                     # the classifier that will reuse the encoder
        encoder, dim = encoder_of(model)
        module = SiameseModule(encoder, dim, optimizer=partial(torch.optim.Adam, lr=1e-3))
        L.Trainer(max_epochs=5).fit(module, datamodule=PairData(MnistEmbedded(train_per_class=100)))
        # `model` now holds the pretrained hidden layers and a fresh head: push it to the zoo.
    """

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        optimizer: Callable[..., torch.optim.Optimizer],
        encoder_b: nn.Module | None = None,
        combine: str = "concat",
        loss: str = "bce",
        margin: float = 1.0,
        head_hidden: int = 10,
        scheduler: LRSchedulerConfig | None = None,
    ):
        super().__init__()
        if combine not in COMBINES:
            raise LtrainError(f"siamese combine={combine!r} is not one of {list(COMBINES)}")
        if loss not in LOSSES:
            raise LtrainError(f"siamese loss={loss!r} is not one of {list(LOSSES)}")
        if margin <= 0:
            raise LtrainError(f"siamese margin must be positive, got {margin}")
        self.encoder = encoder
        self.encoder_b = encoder_b
        self.combine, self.loss_name, self.margin = combine, loss, margin
        fn, mult = COMBINES[combine]
        self._combine = fn
        self.head = _logistic_head(mult * feature_dim, head_hidden) if loss == "bce" else None
        self.optimizer_factory, self.scheduler_config = optimizer, scheduler
        self.metrics = nn.ModuleDict({s: BinaryAccuracy() for s in ("train_acc", "val_acc", "test_acc")})

    @property
    def shared(self) -> bool:
        """True when both inputs go through the same tower."""
        return self.encoder_b is None

    def embed(self, x_a: torch.Tensor, x_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tower_b = self.encoder if self.encoder_b is None else self.encoder_b
        return self.encoder(x_a), tower_b(x_b)

    def forward(self, x_a: torch.Tensor, x_b: torch.Tensor) -> torch.Tensor:
        """The score of "different": a logit (bce) or the embedding distance (contrastive); shape (N,)."""
        a, b = self.embed(x_a, x_b)
        if self.head is None:
            return (a - b).pow(2).sum(-1).add(1e-12).sqrt()
        return self.head(self._combine(a, b)).squeeze(-1)

    def pretext_loss(self, score: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.head is not None:
            return F.binary_cross_entropy_with_logits(score, target)
        return ((1 - target) * score.pow(2) + target * F.relu(self.margin - score).pow(2)).mean() / 2

    def predict_different(self, score: torch.Tensor) -> torch.Tensor:
        """1 where the pair is predicted "different" (the label convention), else 0."""
        threshold = 0.0 if self.head is not None else self.margin / 2
        return (score > threshold).long()

    def step(self, batch, batch_idx: int, stage: str) -> torch.Tensor:
        x_a, x_b, target = batch
        score = self(x_a, x_b)
        loss = self.pretext_loss(score, target)
        metric = self.metrics[f"{stage}_acc"]
        metric(self.predict_different(score), target.long())
        self.log_stage(stage, loss, metric)
        return loss


def _logistic_head(in_features: int, hidden: int) -> nn.Module:
    """Combined embeddings -> one logit: optionally through ``hidden`` He-initialised ELU units."""
    if hidden < 0:
        raise LtrainError(f"siamese head_hidden must be >= 0, got {hidden}")
    if hidden == 0:
        return nn.Linear(in_features, 1)
    head = nn.Sequential(nn.Linear(in_features, hidden), nn.ELU(), nn.Linear(hidden, 1))
    nn.init.kaiming_normal_(head[0].weight, nonlinearity="relu")
    nn.init.zeros_(head[0].bias)
    return head
