"""The one MC-dropout evaluation path: settings (the ``mc:`` config node), a batch's predictions, their metrics.

``ltrain-predict`` (:mod:`ltrain.inference.predict`), the ``risk_sensitive`` preset's callback
(:class:`ltrain.inference.callback.MCDropoutEvaluation`) and the ``mc_fashion`` recipe all read the same
``mc:`` node (``conf/mc/default.yaml`` → :class:`MCSettings`), predict each batch with
:func:`predict_batch` and score it with :class:`CalibrationMetrics`.

:class:`CalibrationMetrics` is a torchmetrics ``Metric`` whose states are SUMS (per confidence bin:
count, confidence, correct; NLL, Brier, entropy, mutual information), so under DDP ``compute()``
gives the figure of the whole data set, not a mean of per-rank figures (calibration error is not
additive over shards). torchmetrics' ``MulticlassCalibrationError`` keeps every prediction in a list
state; these sums are the same ECE in constant memory.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn
from torchmetrics import Metric

from ltrain.errors import LtrainError
from ltrain.inference.mc_dropout import PATHS, MCPrediction, mc_dropout
from ltrain.inference.sites import eval_mode_restored, is_timm_classifier, module_sites
from ltrain.models.network import find_network
from ltrain.seeding import Stream, derive_seed

DEFAULT_SAMPLES = 30
_TINY = 1e-12


@dataclass(frozen=True)
class MCSettings:
    """How MC dropout samples and how its predictions are scored (the ``mc:`` config node).

    Attributes:
        samples: T, stochastic passes per input; None (``auto``): 30 when the network has dropout
            (``ltrain-predict`` predicts deterministically, and says so, when it has none); 0:
            deterministic predictions only.
        seed: seed of the dropout masks; batch ``b`` of rank ``r`` (of ``w``) uses
            ``derive_seed(Stream.MC_BATCH, seed, b * w + r)``, so one process and DDP draw the same masks
            for the same batch.
        chunk_size, max_memory_mb, path, drop_path: passed to :func:`ltrain.inference.mc_dropout`.
        n_bins: equal-width confidence bins of the calibration error and the reliability diagram.
    """

    samples: int | None = None
    seed: int = 0
    chunk_size: int | None = None
    max_memory_mb: float = 512.0
    path: str = "auto"
    drop_path: bool = False
    n_bins: int = 15

    def __post_init__(self) -> None:
        if self.samples is not None and self.samples < 0:
            raise LtrainError(f"mc.samples={self.samples}: use a whole number >= 1, 0 (deterministic only) or null")
        if self.path not in PATHS:
            raise LtrainError(f"mc.path={self.path!r} is not one of {list(PATHS)}")
        if self.n_bins < 1:
            raise LtrainError(f"mc.n_bins={self.n_bins}: use a whole number >= 1")

    def batch_seed(self, batch_idx: int, rank: int = 0, world_size: int = 1) -> int:
        """The mask seed of one batch: distinct across batches and ranks, the same for one process and DDP."""
        return derive_seed(Stream.MC_BATCH, self.seed, batch_idx * world_size + rank)

    def resolved(self, net: nn.Module) -> MCSettings:
        """These settings with ``samples`` decided: ``auto`` is 30 with dropout in ``net``, else 0."""
        if self.samples is not None:
            return self
        return replace(self, samples=DEFAULT_SAMPLES if has_dropout(net, self.drop_path) else 0)


def has_dropout(model: nn.Module, drop_path: bool = False) -> bool:
    """Whether the network declares dropout MC dropout can sample: a dropout module, or a timm ``drop_rate``."""
    net = find_network(model, None, "mc_dropout")
    rate = float(getattr(net, "drop_rate", 0) or 0) if is_timm_classifier(net) else 0.0
    return bool(module_sites(net, drop_path)) or rate > 0


@torch.no_grad()
def predict_batch(
    model: nn.Module, x: torch.Tensor, mc: MCSettings, seed: int
) -> tuple[torch.Tensor, MCPrediction | None]:
    """(N, C) deterministic probabilities of ``x`` and, when ``mc.samples`` > 0, its MC-dropout prediction.

    The model is put in eval mode for the deterministic pass and given back in the mode it had.
    """

    net = find_network(model, None, "mc_dropout")
    with eval_mode_restored(net):
        det = net(x).float().softmax(-1)
    if not mc.samples:
        return det, None
    pred = mc_dropout(
        net,
        x,
        samples=mc.samples,
        seed=seed,
        chunk_size=mc.chunk_size,
        max_memory_mb=mc.max_memory_mb,
        path=mc.path,
        drop_path=mc.drop_path,
    )
    return det, pred


class CalibrationMetrics(Metric):
    """Accuracy, expected calibration error (l1, equal-width bins), NLL, Brier score, mean entropy and,
    for MC dropout, mean mutual information; all accumulated as float64 sums (exact under DDP).

    Example:
        metric = CalibrationMetrics(n_bins=15)
        metric.update(probs, targets)            # (N, C) probabilities, (N,) classes
        metric.compute()                         # {"acc": ..., "ece": ..., "nll": ..., "brier": ..., ...}
    """

    full_state_update = False
    higher_is_better = None
    is_differentiable = False

    def __init__(self, n_bins: int = 15, mutual_info: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.n_bins, self.with_mutual_info = n_bins, mutual_info
        for name in ("bin_count", "bin_confidence", "bin_correct"):
            self.add_state(name, torch.zeros(n_bins, dtype=torch.float64), dist_reduce_fx="sum")
        for name in ("nll_sum", "brier_sum", "entropy_sum", "mutual_info_sum"):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, probs: torch.Tensor, targets: torch.Tensor, mutual_info: torch.Tensor | None = None) -> None:
        """Add a batch: (N, C) class probabilities, (N,) true classes, (N,) mutual information (MC only)."""
        probs, targets = probs.detach().double(), targets.detach().long()
        conf, pred = probs.max(1)
        idx = torch.clamp((conf * self.n_bins).ceil().long() - 1, 0, self.n_bins - 1)  # right-closed, as torchmetrics
        self.bin_count += torch.bincount(idx, minlength=self.n_bins).double()
        self.bin_confidence.index_add_(0, idx, conf)
        self.bin_correct.index_add_(0, idx, (pred == targets).double())
        self.nll_sum -= probs.gather(1, targets[:, None]).clamp_min(_TINY).log().sum()
        onehot = torch.nn.functional.one_hot(targets, probs.shape[1]).double()
        self.brier_sum += (probs - onehot).pow(2).sum()
        self.entropy_sum -= (probs * probs.clamp_min(_TINY).log()).sum()
        if mutual_info is not None:
            self.mutual_info_sum += mutual_info.detach().double().sum()

    def compute(self) -> dict[str, float]:
        """The metrics of everything added (on every rank, when distributed)."""
        n = float(self.bin_count.sum())
        if n == 0:
            raise LtrainError("no predictions were scored (an empty split or limit_test_batches=0?)")
        out = {
            "acc": float(self.bin_correct.sum()) / n,
            "ece": float((self.bin_correct - self.bin_confidence).abs().sum()) / n,
            "nll": float(self.nll_sum) / n,
            "brier": float(self.brier_sum) / n,
            "entropy": float(self.entropy_sum) / n,
        }
        if self.with_mutual_info:
            out["mutual_info"] = float(self.mutual_info_sum) / n
        return out

    def bins(self) -> dict[str, torch.Tensor]:
        """Per confidence bin: edges, count, mean confidence, accuracy (NaN where empty): the reliability diagram."""
        with self.sync_context():  # every rank's predictions, like compute()
            count, conf, correct = (t.detach().cpu().float() for t in self._bin_states())
        nan = torch.full((self.n_bins,), float("nan"))
        return {
            "edges": torch.linspace(0, 1, self.n_bins + 1),
            "count": count,
            "confidence": torch.where(count > 0, conf / count.clamp_min(1), nan),
            "accuracy": torch.where(count > 0, correct / count.clamp_min(1), nan),
        }

    def _bin_states(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.bin_count.clone(), self.bin_confidence.clone(), self.bin_correct.clone()


def classification_metrics(probs: torch.Tensor, targets: torch.Tensor, n_bins: int = 15) -> dict[str, float]:
    """Accuracy, expected calibration error (l1, ``n_bins`` equal-width bins), NLL, Brier, mean entropy of
    (N, C) probabilities against (N,) classes: :class:`CalibrationMetrics` on one batch."""
    metric = CalibrationMetrics(n_bins)
    metric.update(probs.cpu(), targets.cpu())
    return metric.compute()
