"""The chapter's dense network: Flatten, then hidden Linear layers with a chosen activation,
initialiser, optional batch norm (before or after the activation) and dropout, then the output layer."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from ltrain.errors import LtrainError
from ltrain.models.activations import make_activation, pieces_per_unit
from ltrain.models.init import init_weights

DROPOUTS = {"standard": nn.Dropout, "alpha": nn.AlphaDropout}
BN_PLACES = ("none", "before", "after")


def build_mlp(
    in_features: int,
    num_classes: int,
    hidden: Sequence[int] = (100, 100, 100, 100, 100),
    activation: str = "elu",
    activation_kwargs: dict | None = None,
    init: str | None = "he_normal",
    batch_norm: str = "none",
    dropout: float = 0.0,
    dropout_kind: str = "standard",
    dropout_layers: int | None = None,
) -> nn.Sequential:
    """A plain sequential MLP whose hidden blocks are named ``hidden{i}``, the output layer ``head``.

    Args:
        batch_norm: "before" puts BN between the Linear and the activation (the Linear then has no
            bias, since BN's beta replaces it); "after" puts it after the activation; "none" omits it.
        dropout: rate of the dropout after each hidden block (0 disables it).
        dropout_kind: "standard" (nn.Dropout) or "alpha" (nn.AlphaDropout, for SELU nets).
        dropout_layers: apply dropout only after the top this-many hidden blocks (None: all).
    """
    if batch_norm not in BN_PLACES:
        raise LtrainError(f"model.batch_norm={batch_norm!r} is not one of {list(BN_PLACES)}")
    if dropout_kind not in DROPOUTS:
        raise LtrainError(f"model.dropout_kind={dropout_kind!r} is not one of {list(DROPOUTS)}")
    if not 0.0 <= dropout < 1.0:
        raise LtrainError(f"model.dropout={dropout} must be in [0, 1)")
    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    width = in_features
    n = len(hidden)
    first_dropout = 0 if dropout_layers is None else max(0, n - dropout_layers)
    for i, units in enumerate(hidden):
        block = nn.Sequential()
        act = make_activation(activation, **(activation_kwargs or {}))
        pre_units = units * pieces_per_unit(act)  # maxout(k) takes k linear pieces per unit
        block.add_module("linear", nn.Linear(width, pre_units, bias=batch_norm != "before"))
        if batch_norm == "before":
            block.add_module("bn", nn.BatchNorm1d(pre_units))
        block.add_module("act", act)
        if batch_norm == "after":
            block.add_module("bn", nn.BatchNorm1d(units))
        if dropout > 0 and i >= first_dropout:
            block.add_module("dropout", DROPOUTS[dropout_kind](dropout))
        layers.append((f"hidden{i}", block))
        width = units
    layers.append(("head", nn.Linear(width, num_classes)))
    model = nn.Sequential(OrderedDict(layers))
    init_weights(model, init)
    return model
