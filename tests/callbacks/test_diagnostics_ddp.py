"""TrainingDiagnostics under real 2-process DDP (gloo, CPU): one rank's divergence stops both ranks at the
same step (the decision is reduced across ranks), and only rank zero writes the report."""

from __future__ import annotations

import json

import lightning as L
import pytest
from lightning.pytorch.callbacks import Callback

from ltrain.callbacks import TrainingDiagnostics
from ltrain.models import build_mlp
from ltrain.modules.classifier import ClassifierModule


class RankOneDiverges(ClassifierModule):
    """Only rank 1's loss turns NaN, from optimizer step 3 on."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if self.global_rank == 1 and self.global_step >= 3 else loss


class WhereEachRankStopped(Callback):
    def __init__(self, out_dir):
        self.out_dir = out_dir

    def on_fit_end(self, trainer, pl_module):
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps({"step": trainer.global_step}))


def adam(params):
    import torch

    return torch.optim.Adam(params, lr=1e-3)


@pytest.mark.ddp
@pytest.mark.slow  # two spawned processes: ~30 s of CPU, more under load
def test_one_ranks_divergence_stops_every_rank_at_the_same_step(digits_datamodule, tmp_path):
    L.seed_everything(0, verbose=False)
    module = RankOneDiverges(build_mlp(784, 10, hidden=[16]), 10, optimizer=adam)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_epochs=1,
        limit_train_batches=20,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        callbacks=[TrainingDiagnostics(plots=False), WhereEachRankStopped(tmp_path)],
    )
    trainer.fit(module, datamodule=digits_datamodule)
    steps = [json.loads((tmp_path / f"rank{r}.json").read_text())["step"] for r in (0, 1)]
    assert steps == [4, 4]  # both stopped after step 3 (rank 0's own loss was finite)
    report = json.loads((tmp_path / "diagnostics.json").read_text())  # written by rank zero only
    assert "another rank" in report["stop_message"] and "lr=0.001" in report["stop_message"]
