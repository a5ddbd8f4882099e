"""Find the network inside any LightningModule: the one lookup FreezeSchedule and FrozenFeatureCache share."""

from __future__ import annotations

import lightning as L
from torch import nn

from ltrain.errors import LtrainError


def find_network(pl_module: L.LightningModule, model_attr: str | None, owner: str) -> nn.Module:
    """``pl_module.<model_attr>`` (or the module itself for ``None``); a clear error naming the children if absent."""
    if model_attr is None:
        return pl_module
    model = getattr(pl_module, model_attr, None)
    if not isinstance(model, nn.Module):
        children = [n for n, _ in pl_module.named_children()]
        raise LtrainError(
            f"{owner} looks for the network at {type(pl_module).__name__}.{model_attr}, which is not "
            f"an nn.Module. Set model_attr to one of {children} (or null for the LightningModule itself)"
        )
    return model
