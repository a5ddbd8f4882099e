"""Mixup / CutMix on training batches: timm's ``Mixup`` with draws that depend only on (seed, epoch, batch).

What it adds to timm's ``timm.data.Mixup`` (which does the mixing, unchanged):

- **Draws from (seed, epoch, batch, rank), not from history.** timm draws lambda, the mixup/CutMix switch and
  the CutMix box from numpy's global RNG. Each call here seeds numpy from (seed, epoch, batch index, rank),
  runs timm's Mixup, and puts numpy's state back: a resumed run mixes its batches exactly as an uninterrupted
  one, and nothing else that draws from numpy is moved.
- **Refusals instead of asserts.** An odd batch (timm asserts even: the batch is mixed with its reverse), a
  CutMix on inputs that are not images, labels outside ``num_classes`` and bad values are refused with the
  key to change.
- **The input batch is left alone.** timm mixes in place; this mixes a copy, so another callback or the
  module's own metrics still see the batch as the loader gave it.

The loss on the mixed (soft) targets is timm's ``SoftTargetCrossEntropy``; accuracy stays on the hard labels.
Why a module feature and not a callback: mixing turns the labels into soft targets, which only a module
whose loss takes them can use; ``ClassifierModule(mixup=BatchMixup(...))`` does, and a module of your own
calls it in ``training_step`` the same way (see the example).

Example::

    mix = BatchMixup(mixup_alpha=0.8, cutmix_alpha=1.0, num_classes=10, seed=0)
    def training_step(self, batch, batch_idx):
        x, y = batch
        x, soft = mix(x, y, epoch=self.current_epoch, batch_idx=batch_idx, rank=self.global_rank)
        logits = self.net(x)
        self.train_acc(logits, y)                       # hard labels
        return soft_target_cross_entropy(logits, soft)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy

from ltrain.errors import LtrainError
from ltrain.seeding import Stream, derive_seed

MODES = ("batch", "pair", "elem")

_soft_target_ce = SoftTargetCrossEntropy()


def soft_target_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """timm's SoftTargetCrossEntropy: mean over the batch of ``sum_c -target_c * log_softmax(logits)_c``."""
    return _soft_target_ce(logits, target)


def batch_seed(seed: int, epoch: int, batch_idx: int, rank: int = 0) -> int:
    """The numpy seed of one batch's mixing draws: a function of (run seed, epoch, batch index, rank) only.

    Its own stream (not :class:`ltrain.callbacks.EpochSeed`'s per-batch seed), so the mixing draws are not
    the numpy stream that callback starts for the same batch.
    """
    return derive_seed(Stream.MIXUP, seed, epoch, batch_idx, rank, bits=32)


def _probability(key: str, value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
        raise LtrainError(f"mixup.{key}={value!r} is not valid: expected a probability in [0, 1]")
    return float(value)


def _alpha(key: str, value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
        raise LtrainError(f"mixup.{key}={value!r} is not valid: expected a Beta parameter >= 0 (0: off)")
    return float(value)


class BatchMixup:
    """timm's Mixup/CutMix with per-(seed, epoch, batch) draws, for training batches only.

    Args (timm's ``Mixup`` arguments, same meaning and defaults as timm's DeiT recipe):
        mixup_alpha: Beta(alpha, alpha) of the mixup weight; 0 turns mixup off.
        cutmix_alpha: Beta(alpha, alpha) of the CutMix area; 0 turns CutMix off.
        cutmix_minmax: [min, max] fraction of the image side for the CutMix box (then timm ignores cutmix_alpha).
        prob: probability of mixing a batch (or element / pair, per ``mode``).
        switch_prob: with both on, the probability of CutMix instead of mixup.
        mode: "batch" (one lambda per batch), "pair" (per pair of elements) or "elem" (per element).
        correct_lam: correct lambda by the CutMix box's area once clipped at the image border.
        label_smoothing: smoothing of the one-hot targets before they are mixed.
        num_classes: classes of the targets (None: set by :meth:`bind`, e.g. from the data).
        seed: the run's seed; the draws of batch b in epoch e come from (seed, e, b, rank).
    """

    def __init__(
        self,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        cutmix_minmax: Sequence[float] | None = None,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        mode: str = "batch",
        correct_lam: bool = True,
        label_smoothing: float = 0.1,
        num_classes: int | None = None,
        seed: int = 0,
    ) -> None:
        mixup_alpha, cutmix_alpha = _alpha("mixup_alpha", mixup_alpha), _alpha("cutmix_alpha", cutmix_alpha)
        if cutmix_minmax is not None:
            cutmix_minmax = list(cutmix_minmax)
            if len(cutmix_minmax) != 2 or not 0 < cutmix_minmax[0] < cutmix_minmax[1] <= 1:
                raise LtrainError(
                    f"mixup.cutmix_minmax={cutmix_minmax!r} is not valid: expected [min, max] fractions of the "
                    "image side with 0 < min < max <= 1, e.g. [0.2, 0.8], or null"
                )
        if mixup_alpha == 0 and cutmix_alpha == 0 and cutmix_minmax is None:
            raise LtrainError(
                "mixup.mixup_alpha=0 and mixup.cutmix_alpha=0 mix nothing: set one of them > 0 "
                "(e.g. mixup.mixup_alpha=0.8), or turn mixing off with mixup=null"
            )
        if mode not in MODES:
            raise LtrainError(f"mixup.mode={mode!r} is not one of {list(MODES)}")
        if not isinstance(correct_lam, bool):
            raise LtrainError(f"mixup.correct_lam={correct_lam!r} is not valid: expected true or false")
        smoothing = _probability("label_smoothing", label_smoothing)
        if smoothing >= 1:
            raise LtrainError(f"mixup.label_smoothing={label_smoothing!r} is not valid: expected a number in [0, 1)")
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 2):
            raise LtrainError(f"mixup.num_classes={num_classes!r} is not valid: expected >= 2, or null (the data's)")
        self.seed = int(seed)
        self.mixup = Mixup(
            mixup_alpha=mixup_alpha,
            cutmix_alpha=cutmix_alpha,
            cutmix_minmax=cutmix_minmax,
            prob=_probability("prob", prob),
            switch_prob=_probability("switch_prob", switch_prob),
            mode=mode,
            correct_lam=correct_lam,
            label_smoothing=smoothing,
            num_classes=num_classes or 0,
        )
        self.num_classes = num_classes

    @property
    def cutmix(self) -> bool:
        """True when some batches are CutMix (which cuts boxes out of (N, C, H, W) images)."""
        return self.mixup.cutmix_alpha > 0

    def bind(self, num_classes: int, input_shape: Sequence[int] | None = None) -> BatchMixup:
        """Fix the number of classes (refusing a different ``mixup.num_classes``) and check the input shape."""
        if self.num_classes is not None and self.num_classes != num_classes:
            raise LtrainError(
                f"mixup.num_classes={self.num_classes} but the data has {num_classes} classes: "
                "set mixup.num_classes=null (the data's) or to the data's number of classes"
            )
        if input_shape is not None and self.cutmix and len(input_shape) != 3:
            raise LtrainError(
                f"CutMix cuts boxes out of images, but the inputs have shape {tuple(input_shape)}, not (C, H, W): "
                "set mixup.cutmix_alpha=0 (mixup only) or feed images"
            )
        self.num_classes = self.mixup.num_classes = num_classes
        return self

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, epoch: int, batch_idx: int, rank: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mixed copy of ``x``, soft targets (N, num_classes)) for batch ``batch_idx`` of ``epoch``."""
        if self.num_classes is None:
            raise LtrainError("BatchMixup needs the number of classes: pass num_classes= or call bind(num_classes)")
        if len(x) % 2:
            raise LtrainError(
                f"Mixup/CutMix mixes a batch with its reverse and needs an even batch, got {len(x)}: use an even "
                "data.batch_size and drop the last incomplete batch (DataLoader(drop_last=True); ltrain does both)"
            )
        if self.cutmix and x.ndim != 4:
            raise LtrainError(
                f"CutMix needs (N, C, H, W) images, got inputs of shape {tuple(x.shape)}: set mixup.cutmix_alpha=0"
            )
        if y.ndim != 1 or (len(y) and (int(y.min()) < 0 or int(y.max()) >= self.num_classes)):
            raise LtrainError(
                f"Mixup needs class indices in [0, {self.num_classes}); got labels of shape {tuple(y.shape)} "
                f"in [{int(y.min())}, {int(y.max())}]: check mixup.num_classes"
            )
        state = np.random.get_state()
        np.random.seed(batch_seed(self.seed, epoch, batch_idx, rank))
        try:
            return self.mixup(x.clone(), y)
        finally:
            np.random.set_state(state)

    def __repr__(self) -> str:
        m = self.mixup
        return (
            f"BatchMixup(mixup_alpha={m.mixup_alpha}, cutmix_alpha={m.cutmix_alpha}, cutmix_minmax={m.cutmix_minmax}, "
            f"prob={m.mix_prob}, switch_prob={m.switch_prob}, mode={m.mode!r}, correct_lam={m.correct_lam}, "
            f"label_smoothing={m.label_smoothing}, num_classes={self.num_classes}, seed={self.seed})"
        )
