"""The model zoo as users load it: the catalogue of :mod:`ltrain.store` plus rebuilding an entry as a network.

``Zoo`` is the store's ``Catalog`` with ``load_model``, which needs ltrain's model factory — the one thing the
store must not import (it sits below the models). Everything else (list / show / push / verify / rm, lineage,
checksums) is the catalogue's. Pushing a finished run is :mod:`ltrain.publish`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ltrain.models.factory import build_model
from ltrain.store.catalog import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    Catalog,
    VerifyResult,
    ZooEntry,
    catalog_dir,
    check_name,
    summarize_metrics,
    zoo_home,
)

__all__ = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "VerifyResult",
    "Zoo",
    "ZooEntry",
    "catalog_dir",
    "check_name",
    "load_model",
    "summarize_metrics",
    "timm_pretrained_cfg",
    "zoo_home",
]


class Zoo(Catalog):
    """The catalogue (``ltrain.store.Catalog``) whose entries also load as ready networks."""

    def load_model(self, name: str) -> nn.Module:
        """The entry rebuilt as the network it was (architecture, classes, input shape) with its weights, in eval mode."""
        entry = self.check(name)
        model = build_model({**entry.model, "pretrained": None}, entry.num_classes, tuple(entry.input_shape))
        model.load_state_dict(self.load_state_dict(name), strict=True)
        return model.eval()


def load_model(name: str) -> nn.Module:
    """Entry ``name`` of the default catalogue as a ready network (eval mode)."""
    return Zoo().load_model(name)


def timm_pretrained_cfg(name: str) -> dict[str, Any]:
    """Entry ``name`` as timm pretrained weights: pass as ``pretrained_cfg_overlay`` to ``timm.create_model``."""
    return Zoo().timm_pretrained_cfg(name)
