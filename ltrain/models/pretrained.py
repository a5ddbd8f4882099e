"""Where weights come from: ``zoo:NAME``, ``timm``, ``imagenet_lite0`` or a file path (issue 5)."""

from __future__ import annotations

from torch import nn

from ltrain.errors import LtrainError


def load_pretrained(model: nn.Module, source: str, arch: str) -> nn.Module:
    raise LtrainError(f"model.pretrained={source!r}: pretrained sources are not available yet")
