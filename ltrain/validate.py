"""Check a composed config before any work: wrong types, zero or negative sizes and impossible combinations fail
in the first second with the key, the value and what is valid.

Hydra accepts any override of an existing key (``optimizer.lr=fast`` is a string, ``data.batch_size=1.5`` a
float); without these checks they surface as tracebacks deep inside torch, or not at all (``trainer.max_epochs=0``
"tests" an untrained net). The rules are data (:data:`TRAIN_RULES`, :data:`PREDICT_RULES`), one line per key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from ltrain.errors import LtrainError

_ABSENT = object()


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class Rule:
    """``key`` must satisfy ``ok``; ``valid`` says what is valid, for the message. ``null`` allows None."""

    key: str
    ok: Callable[[Any], bool]
    valid: str
    null: bool = False

    def check(self, cfg: DictConfig) -> None:
        value = OmegaConf.select(cfg, self.key, default=_ABSENT, throw_on_missing=False)
        if value is _ABSENT or (value is None and self.null):
            return
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        if value is None or not self.ok(value):
            raise LtrainError(f"{self.key}={value!r} is not valid: expected {self.valid}")


def integer(lo: int | None = None, also: Sequence[int] = ()) -> Callable[[Any], bool]:
    return lambda v: _is_int(v) and (v in also or lo is None or v >= lo)


def number(gt: float | None = None, ge: float | None = None, lt: float | None = None) -> Callable[[Any], bool]:
    return lambda v: (
        _is_number(v)
        and (gt is None or v > gt)
        and (ge is None or v >= ge)
        and (lt is None or v < lt)
        and v == v  # not NaN
    )


def boolean(v: Any) -> bool:
    return isinstance(v, bool)


def widths(v: Any) -> bool:
    return isinstance(v, list) and all(_is_int(w) and w >= 1 for w in v)


TRAIN_RULES = [
    Rule("seed", integer(), "an integer, e.g. seed=0"),
    Rule("trainer.max_epochs", integer(1, also=(-1,)), "a whole number of epochs >= 1 (-1: until stopped)"),
    Rule("trainer.min_epochs", integer(0), "a whole number of epochs >= 0", null=True),
    Rule("trainer.gradient_clip_val", number(gt=0), "a number > 0, or null for no clipping", null=True),
    Rule("optimizer.lr", number(gt=0), "a learning rate > 0, e.g. optimizer.lr=0.001"),
    Rule("optimizer.weight_decay", number(ge=0), "a number >= 0"),
    Rule("optimizer.momentum", number(ge=0, lt=1), "a number in [0, 1)"),
    Rule("l1", number(ge=0), "a penalty >= 0 (0: none)"),
    Rule("l2", number(ge=0), "a penalty >= 0 (0: none)"),
    Rule("data.batch_size", integer(1), "a whole number >= 1, e.g. data.batch_size=64"),
    Rule("data.eval_batch_size", integer(1), "a whole number >= 1, e.g. data.eval_batch_size=512", null=True),
    Rule("data.image_size", integer(1), "a side in pixels >= 1, or null for the data's own size", null=True),
    Rule("data.channels", integer(1), "1 or 3 (or null for the data's own)", null=True),
    Rule("data.num_workers", integer(0), "a whole number >= 0"),
    Rule("data.train_per_class", integer(1), "a whole number >= 1, or null for all", null=True),
    Rule("data.test_per_class", integer(1), "a whole number >= 1, or null for the whole test split", null=True),
    Rule("data.val_fraction", number(ge=0, lt=1), "a fraction in [0, 1)"),
    Rule("data.test_fraction", number(ge=0, lt=1), "a fraction in [0, 1)"),
    # streamed image folders / lists (data=image_folder, data=image_list)
    Rule("data.re_prob", number(ge=0, lt=1.0001), "a probability in [0, 1], e.g. data.re_prob=0.25"),
    Rule("data.hflip", number(ge=0, lt=1.0001), "a probability in [0, 1], e.g. data.hflip=0.5"),
    Rule("data.color_jitter", number(ge=0), "a number >= 0 (0: none), e.g. data.color_jitter=0.4"),
    Rule("data.crop_pct", number(gt=0, lt=1.0001), "a fraction in (0, 1], or null for the model's", null=True),
    Rule("data.stats_samples", integer(1), "a whole number >= 1, e.g. data.stats_samples=500"),
    Rule("model.drop_rate", number(ge=0, lt=1), "a rate in [0, 1)"),
    Rule("model.dropout_layers", integer(1), "a whole number >= 1, or null for all", null=True),
    Rule("test", boolean, "true or false"),
    Rule("plots", boolean, "true or false"),
    Rule("zoo.overwrite", boolean, "true or false"),
]

PREDICT_RULES = [
    Rule("mc.samples", integer(0), "a whole number of passes >= 1 (0: deterministic predictions only)", null=True),
    Rule("mc.seed", integer(), "an integer"),
    Rule("mc.chunk_size", integer(1), "a whole number >= 1, or null", null=True),
    Rule("mc.max_memory_mb", number(gt=0), "a number of MB > 0"),
    Rule("limit", integer(1), "a whole number of inputs >= 1, or null for all", null=True),
    Rule("batch_size", integer(1), "a whole number >= 1"),
    Rule("mc.n_bins", integer(1), "a whole number >= 1"),
]


def validate_train_config(cfg: DictConfig) -> None:
    """Refuse a training config with a wrong type, a size out of range, or an impossible combination."""
    for rule in TRAIN_RULES:
        rule.check(cfg)
    model = cfg.get("model") or {}
    if model.get("name") == "mlp":
        Rule("model.hidden", widths, "a list of layer widths >= 1, e.g. model.hidden=[100,100]").check(cfg)
    classes = OmegaConf.select(cfg, "data.classes", default=None)
    if classes is not None and not isinstance(classes, ListConfig):
        raise LtrainError(f"data.classes={classes!r} is not valid: expected a list of classes, e.g. data.classes=[0,1]")
    if classes is not None and len(classes) == 1:
        raise LtrainError(
            f"data.classes={list(classes)} keeps one class: a classifier needs at least 2, e.g. data.classes=[0,1]"
        )
    check_mixup(cfg)


def check_mixup(cfg: DictConfig) -> None:
    """Refuse what Mixup/CutMix cannot do exactly: an odd batch, a feature cache, a loss without soft targets.

    The mixup keys' own values are checked when the ``mixup`` group is instantiated (``BatchMixup``).
    """
    if not cfg.get("mixup"):
        return
    batch = OmegaConf.select(cfg, "data.batch_size", default=None)
    if _is_int(batch) and batch % 2:
        raise LtrainError(
            f"mixup mixes each training batch with its reverse and needs an even data.batch_size, "
            f"got data.batch_size={batch}: use e.g. data.batch_size={batch + 1}"
        )
    if cfg.get("cache"):
        raise LtrainError(
            "mixup with a feature cache cannot be exact: the cache holds the frozen layers' outputs of unmixed "
            "images, and mixing those is not mixing the images. Drop one: mixup=null or cache=null"
        )
    loss = cfg.get("loss", "cross_entropy")
    if loss != "cross_entropy":
        raise LtrainError(
            f"mixup trains on soft (mixed) targets, which loss={loss!r} does not take: "
            "use loss=cross_entropy (timm's SoftTargetCrossEntropy on the mixed targets) or mixup=null"
        )


def validate_predict_config(cfg: DictConfig) -> None:
    """Refuse an ``ltrain-predict`` config with a wrong type or a size out of range."""
    for rule in PREDICT_RULES:
        rule.check(cfg)


def check_input_size(model: Any, input_shape: Sequence[int], model_name: str) -> None:
    """Refuse inputs smaller than the network's total stride (timm's ``feature_info``): a resnet18 fed 2-pixel
    images trains without a word on what its first convolution leaves; a ViT cannot cut them into patches."""
    info = getattr(model, "feature_info", None)
    try:
        stride = max(int(f["reduction"]) for f in info) if info else 1
    except (TypeError, KeyError, ValueError):
        stride = 1
    side = min(int(s) for s in input_shape[1:])
    if side < stride:
        raise LtrainError(
            f"the inputs are {side} pixels, smaller than {model_name}'s total stride of {stride}: its last layers "
            f"would see nothing of the image. Set data.image_size to at least {stride} "
            f"(e.g. data.image_size={max(stride, 32) * 2})"
        )
