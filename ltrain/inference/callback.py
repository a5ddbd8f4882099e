"""``MCDropoutEvaluation``: score MC-dropout predictions next to the deterministic ones in ``trainer.test``.

The ``risk_sensitive`` preset adds it (``callbacks.mc_dropout``, its settings in the ``mc:`` node), so a
run reports how sure the model is, not only how often it is right: ``test/mc_acc``, ``test/mc_ece``,
``test/mc_nll``, ``test/mc_brier``, ``test/mc_mutual_info`` beside the deterministic ``test/ece``,
``test/nll``, ``test/brier``, and a reliability diagram in the run directory.

    trainer = L.Trainer(callbacks=[MCDropoutEvaluation(MCSettings(samples=30))])
    trainer.test(module, datamodule=dm)
    callback.results  # {"deterministic": {...}, "mc_dropout": {...}}

Works with any LightningModule whose network (found as every ltrain callback finds it) returns logits
and whose test batches are ``(x, y)``. The metrics are sums in torchmetrics states, so under DDP they are
the figures of the whole test set (Lightning's DistributedSampler pads a set that does not divide by the
number of processes with repeated inputs: those are counted twice, as in every DDP test metric).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from ltrain.errors import LtrainError
from ltrain.inference.evaluation import DEFAULT_SAMPLES, CalibrationMetrics, MCSettings, has_dropout, predict_batch
from ltrain.inference.reliability import plot_reliability
from ltrain.models.network import find_network


class MCDropoutEvaluation(Callback):
    """MC-dropout metrics of the test set (accuracy, calibration error, NLL, Brier, mutual information).

    Args:
        mc: how to sample and score (``samples=None`` means 30; at least 2 are needed).
        plot: write ``reliability.png`` in the trainer's ``default_root_dir`` (rank zero).
    """

    def __init__(self, mc: MCSettings | None = None, plot: bool = True):
        mc = mc or MCSettings()
        if mc.samples is None:
            mc = replace(mc, samples=DEFAULT_SAMPLES)
        if mc.samples < 2:
            raise LtrainError(f"MCDropoutEvaluation needs mc.samples >= 2 to estimate uncertainty, got {mc.samples}")
        self.mc, self.plot = mc, plot
        self.results: dict[str, dict[str, float]] = {}
        self.scored = 0  # test inputs scored in the last test pass (all ranks)
        self._det = CalibrationMetrics(mc.n_bins)
        self._mc = CalibrationMetrics(mc.n_bins, mutual_info=True)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Fail before training if the network has no dropout to sample, naming the key that adds it."""
        if has_dropout(pl_module, self.mc.drop_path):
            return
        raise LtrainError(
            f"MC dropout needs a network with dropout, and {type(find_network(pl_module)).__name__} has none. "
            "Set model.dropout=0.2 (MLP) or model.drop_rate=0.2 (timm models), or drop callbacks.mc_dropout"
        )

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for metric in (self._det, self._mc):
            metric.reset()
            metric.to(pl_module.device)

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        x, y = batch[0], batch[1]
        seed = self.mc.batch_seed(batch_idx, trainer.global_rank, trainer.world_size)
        det, pred = predict_batch(pl_module, x, self.mc, seed)
        self._det.update(det, y)
        self._mc.update(pred.mean, y, pred.mutual_info)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._det.update_called:
            return
        self.results = {"deterministic": self._det.compute(), "mc_dropout": self._mc.compute()}
        logged = {f"test/{k}": self.results["deterministic"][k] for k in ("ece", "nll", "brier")}
        logged |= {f"test/mc_{k}": v for k, v in self.results["mc_dropout"].items()}
        for key, value in logged.items():
            pl_module.log(key, value)  # already the whole test set's figure on every rank
        # bins() gathers from every rank: all of them call it, rank zero draws
        curves = {"deterministic": self._det.bins(), f"MC dropout (T={self.mc.samples})": self._mc.bins()}
        self.scored = int(curves["deterministic"]["count"].sum())
        if self.plot and trainer.is_global_zero:
            plot_reliability(curves, Path(trainer.default_root_dir) / "reliability.png")
