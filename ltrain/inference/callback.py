"""``MCDropoutEvaluation``: score MC-dropout predictions next to the deterministic ones in ``trainer.test``.

The ``risk_sensitive`` preset adds it (``callbacks.mc_dropout``), so a run reports how sure the model
is, not only how often it is right: ``test/mc_acc``, ``test/mc_ece``, ``test/mc_nll``, ``test/mc_brier``,
``test/mc_mutual_info`` beside the deterministic ``test/ece``, ``test/nll``, ``test/brier``, and a
reliability diagram in the run directory.

    trainer = L.Trainer(callbacks=[MCDropoutEvaluation(samples=30)])
    trainer.test(module, datamodule=dm)

Works with any LightningModule whose ``forward`` (or ``.model`` for ClassifierModule) returns logits
and whose test batches are ``(x, y)``. Under DDP each rank scores its shard and the logged values
are averaged across ranks (``sync_dist``); the plot is written by rank zero from its shard.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from ltrain.errors import LtrainError
from ltrain.inference.mc_dropout import mc_dropout
from ltrain.inference.sites import is_timm_classifier, module_sites
from ltrain.models.network import find_network


class MCDropoutEvaluation(Callback):
    """MC-dropout metrics of the test set (accuracy, calibration error, NLL, Brier, mutual information).

    Args:
        samples: T, stochastic passes per test input.
        seed: seed of the dropout masks (batch ``b`` uses ``seed * 100_003 + b``).
        chunk_size, max_memory_mb, path: passed to :func:`ltrain.inference.mc_dropout`.
        n_bins: confidence bins of the calibration error and the reliability diagram.
        plot: write ``reliability.png`` in the trainer's ``default_root_dir``.
    """

    def __init__(
        self,
        samples: int = 30,
        seed: int = 0,
        chunk_size: int | None = None,
        max_memory_mb: float = 512.0,
        path: str = "auto",
        n_bins: int = 15,
        plot: bool = True,
    ):
        if samples < 2:
            raise LtrainError(f"MCDropoutEvaluation needs samples >= 2 to estimate uncertainty, got {samples}")
        self.samples, self.seed, self.n_bins, self.plot = samples, seed, n_bins, plot
        self.mc_kwargs: dict[str, Any] = {"chunk_size": chunk_size, "max_memory_mb": max_memory_mb, "path": path}
        self._det: list[torch.Tensor] = []
        self._mc: list[torch.Tensor] = []
        self._mi: list[torch.Tensor] = []
        self._y: list[torch.Tensor] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Fail before training if the network has no dropout to sample, naming the key that adds it."""
        net = find_network(pl_module)
        if module_sites(net) or (is_timm_classifier(net) and float(getattr(net, "drop_rate", 0) or 0) > 0):
            return
        raise LtrainError(
            f"MC dropout needs a network with dropout, and {type(net).__name__} has none. "
            "Set model.dropout=0.2 (MLP) or model.drop_rate=0.2 (timm models), or drop callbacks.mc_dropout"
        )

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._det, self._mc, self._mi, self._y = [], [], [], []

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
        with torch.no_grad():
            self._det.append(pl_module(x).float().softmax(-1).cpu())
        pred = mc_dropout(pl_module, x, samples=self.samples, seed=self.seed * 100_003 + batch_idx, **self.mc_kwargs)
        self._mc.append(pred.mean.cpu())
        self._mi.append(pred.mutual_info.cpu())
        self._y.append(y.cpu())

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from ltrain.inference.uncertainty import classification_metrics

        if not self._y:
            return
        y, det, mc = torch.cat(self._y), torch.cat(self._det), torch.cat(self._mc)
        det_m = classification_metrics(det, y, self.n_bins)
        mc_m = classification_metrics(mc, y, self.n_bins)
        logged = {f"test/{k}": det_m[k] for k in ("ece", "nll", "brier")}
        logged |= {f"test/mc_{k}": v for k, v in mc_m.items()}
        logged["test/mc_mutual_info"] = float(torch.cat(self._mi).mean())
        for key, value in logged.items():
            pl_module.log(key, value, sync_dist=True)
        if self.plot and trainer.is_global_zero:
            from ltrain.inference.reliability import plot_reliability

            plot_reliability(
                {"deterministic": det, f"MC dropout (T={self.samples})": mc},
                y,
                Path(trainer.default_root_dir) / "reliability.png",
                n_bins=self.n_bins,
            )
