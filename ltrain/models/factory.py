"""Build the network a config names: the chapter's MLP (``model.name=mlp``) or any timm model by name."""

from __future__ import annotations

import functools
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ltrain.errors import LtrainError, close_matches
from ltrain.models.mlp import build_mlp
from ltrain.models.pretrained import load_pretrained
from ltrain.models.surgery import apply_surgery

MLP_KEYS = (
    "hidden",
    "activation",
    "activation_kwargs",
    "init",
    "batch_norm",
    "dropout",
    "dropout_kind",
    "dropout_layers",
)


@functools.cache
def timm_model_names() -> tuple[str, ...]:
    import timm

    return tuple(timm.list_models())


def check_model_name(name: str) -> None:
    """Fail before any work if ``name`` is neither ``mlp`` nor a timm architecture, naming close matches."""
    if name == "mlp":
        return
    import timm

    base = name.split(".", 1)[0]  # timm accepts "arch.pretrained_tag"
    if timm.is_model(base):
        return
    hint = close_matches(base, ("mlp", *timm_model_names()))
    raise LtrainError(
        f"unknown model {name!r}."
        + (f" Close matches: {', '.join(hint)}." if hint else "")
        + " List timm's models with: python -c \"import timm; print(timm.list_models('*resnet*'))\""
    )


def build_model(cfg: DictConfig | dict[str, Any], num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """The network for ``cfg`` (the ``model`` config group), sized for the data's classes and input shape."""
    cfg = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    name = cfg["name"]
    check_model_name(name)
    if name == "mlp":
        kwargs = {k: cfg[k] for k in MLP_KEYS if k in cfg}
        c, h, w = input_shape
        model = build_mlp(c * h * w, num_classes, **kwargs)
    else:
        model = _build_timm(name, cfg, num_classes, input_shape)
    if cfg.get("pretrained"):
        load_pretrained(model, str(cfg["pretrained"]), arch=name)
    if cfg.get("surgery"):
        apply_surgery(model, num_classes, input_shape, **cfg["surgery"])
    if cfg.get("channels_last"):
        # NHWC weights make PyTorch pick its NHWC convolution kernels for every input (python
        # bench/channels_last.py: tf_efficientnet_lite0 at 224 px on a 2-core CPU, 1.46x eval and 1.68x
        # training images/s). Outputs differ from NCHW's at float rounding; every path of a run uses it.
        model = model.to(memory_format=torch.channels_last)
    return model


def _build_timm(name: str, cfg: dict[str, Any], num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    stray = [k for k in MLP_KEYS if cfg.get(k) is not None]
    if stray:
        raise LtrainError(
            f"model.name={name} is a timm model, but the model config is the MLP's (keys {stray}).\n"
            f"  Use the timm model group: ltrain model=timm model.name={name}"
        )
    import timm

    kwargs = dict(cfg.get("kwargs") or {})
    if cfg.get("drop_rate") is not None:
        kwargs["drop_rate"] = cfg["drop_rate"]
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=input_shape[0], **kwargs)
