"""The transform of a streamed image: timm's own train/eval transforms, built from settings that print.

timm's ``create_transform`` is used as it is (Resize/CenterCrop at ``crop_pct`` with the model's
interpolation for evaluation; RandomResizedCrop, flip, colour jitter or RandAugment and random erasing for
training); what ltrain adds is a frozen record of the settings: its ``repr`` names every one (a feature
cache keys on it), ``deterministic`` says whether the output depends only on the input, and the model's
own settings are looked up by name (:func:`model_preprocessing`) without building the model, or read from
the zoo entry whose weights the model starts from (:func:`zoo_preprocessing`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from PIL import Image

from ltrain.errors import LtrainError

INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos", "random")


@dataclass(frozen=True)
class ImagePreprocess:
    """PIL image -> normalised float (C, size, size) tensor with timm's train or eval transform.

    ``training=False`` is timm's eval transform (deterministic); ``training=True`` its train transform with
    the augmentation settings below (``None`` keeps timm's defaults: scale (0.08, 1), ratio (3/4, 4/3)).
    """

    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    crop_mode: str = "center"
    mode: str = "RGB"  # the PIL mode images are decoded to: RGB, or L for 1 channel
    training: bool = False
    scale: tuple[float, float] | None = None
    ratio: tuple[float, float] | None = None
    hflip: float = 0.5
    color_jitter: float = 0.4
    auto_augment: str | None = None
    re_prob: float = 0.0
    _built: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def deterministic(self) -> bool:
        return not self.training

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3

    def evaluation(self) -> ImagePreprocess:
        """The same settings without augmentation (what validation and test see; its repr names none)."""
        return replace(
            self, training=False, scale=None, ratio=None, hflip=0.5, color_jitter=0.4, auto_augment=None, re_prob=0.0
        )

    def timm_transform(self) -> Any:
        """timm's transform for these settings (built once per process)."""
        if self._built is None:
            from timm.data import create_transform

            kwargs: dict[str, Any] = {"interpolation": self.interpolation, "mean": self.mean, "std": self.std}
            if self.training:
                kwargs.update(
                    scale=self.scale, ratio=self.ratio, hflip=self.hflip, color_jitter=self.color_jitter,
                    auto_augment=self.auto_augment, re_prob=self.re_prob,
                )  # fmt: skip
            else:
                kwargs.update(crop_pct=self.crop_pct, crop_mode=self.crop_mode)
            size = (self.channels, self.size, self.size)
            object.__setattr__(self, "_built", create_transform(size, is_training=self.training, **kwargs))
        return self._built

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.timm_transform()(image)

    def __getstate__(self) -> dict[str, Any]:  # workers rebuild timm's transform rather than unpickle it
        state = dict(self.__dict__)
        state["_built"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def model_preprocessing(model_name: str, image_size: int | None) -> dict[str, Any]:
    """timm's data config of ``model_name`` (input size, mean/std, interpolation, crop_pct, crop_mode), looked up
    from its pretrained config without building it; ``image_size`` replaces the input size."""
    from timm.data import resolve_data_config
    from timm.models import get_pretrained_cfg

    try:
        pretrained = get_pretrained_cfg(model_name)
    except Exception:  # timm raises RuntimeError for a name it has no config for
        pretrained = None
    if pretrained is None:
        raise LtrainError(
            f"timm has no preprocessing config for model {model_name!r}: set data.preprocess=dataset "
            "(mean/std from the train split) and data.image_size"
        )
    args = {"input_size": (3, image_size, image_size)} if image_size else {}
    cfg = resolve_data_config(args, pretrained_cfg=pretrained.to_dict())
    _, h, w = cfg["input_size"]
    if h != w:
        raise LtrainError(f"{model_name} wants {h}x{w} inputs; set data.image_size to serve square images")
    return {
        "size": int(h),
        "mean": tuple(float(v) for v in cfg["mean"]),
        "std": tuple(float(v) for v in cfg["std"]),
        "interpolation": str(cfg["interpolation"]),
        "crop_pct": float(cfg["crop_pct"]),
        "crop_mode": str(cfg.get("crop_mode", "center")),
    }


def zoo_preprocessing(entry_name: str, image_size: int | None) -> tuple[dict[str, Any], int]:
    """The inputs zoo entry ``entry_name`` was trained on — side, mean/std, interpolation, crop_pct, as its run
    recorded them — and their channels; ``image_size`` replaces the side.

    Why not timm's config of the architecture: an entry trained by ltrain on, say, grey 64-px digits
    standardised with their own mean/std expects those inputs, not ImageNet's 224-px RGB statistics.
    """
    from ltrain.store import Catalog

    entry = Catalog().get(entry_name)
    prep, (channels, side, _) = entry.preprocessing, entry.input_shape
    if not prep.get("mean") or not prep.get("std"):
        raise LtrainError(
            f"zoo entry {entry_name!r} does not record the mean/std its inputs were standardised with, so the "
            "preprocessing its weights expect is unknown. Set data.preprocess=dataset (mean/std of your train "
            "split) and data.image_size, or push the entry again from a run that records them"
        )
    if len(prep["mean"]) != channels:
        raise LtrainError(
            f"zoo entry {entry_name!r} records {len(prep['mean'])} channel mean(s) for {channels}-channel inputs: "
            f"the entry is damaged; check it with: ltrain-zoo show {entry_name}"
        )
    return {
        "size": int(image_size or side),
        "mean": tuple(float(v) for v in prep["mean"]),
        "std": tuple(float(v) for v in prep["std"]),
        "interpolation": str(prep.get("interpolation", "bilinear")),
        "crop_pct": float(prep.get("crop_pct", 1.0)),
        "crop_mode": str(prep.get("crop_mode", "center")),
    }, int(channels)
