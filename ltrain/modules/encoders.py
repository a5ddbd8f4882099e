"""The encoder of a classifier: everything below its output layer, sharing the classifier's modules.

Pretraining modules (siamese, autoencoder, contrastive, corruption discrimination) train an encoder
taken from a full classifier-shaped network. Because the encoder SHARES that network's modules, the
network itself ends up holding the pretrained layers and an untouched, freshly initialised head: it
can be saved to the zoo as is and loaded by ``model.pretrained=zoo:NAME`` into the same architecture
(the head is replaced when the number of classes differs).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ltrain.errors import LtrainError


class TimmTrunk(nn.Module):
    """A timm classifier's pooled pre-logit features (``forward_head(..., pre_logits=True)``).

    timm's ``num_classes=0`` gives the same output but drops the head; this keeps the head in the
    wrapped model, so the model stays classifier-shaped for the zoo.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


def encoder_of(model: nn.Module) -> tuple[nn.Module, int]:
    """``(encoder, feature_dim)`` for a :func:`~ltrain.models.build_mlp` network or a timm model.

    MLP: ``flatten`` and the ``hidden*`` blocks (without ``head``). timm: :class:`TimmTrunk`. Anything
    else is refused: pass your own encoder module to the pretraining module instead.
    """
    children = OrderedDict(model.named_children())
    if isinstance(model, nn.Sequential) and "head" in children:
        head = children.pop("head")
        return nn.Sequential(children), head.in_features
    if hasattr(model, "forward_features") and hasattr(model, "forward_head"):
        dim = getattr(model, "head_hidden_size", None) or model.num_features
        return TimmTrunk(model), int(dim)
    raise LtrainError(
        f"cannot find the encoder of a {type(model).__name__}: expected build_mlp's network (a 'head' "
        "child) or a timm model (forward_features/forward_head); pass an encoder module directly"
    )
