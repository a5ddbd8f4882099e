"""Worker of test_mc_ddp.py: ``trainer.test`` with MCDropoutEvaluation on 1 process or 2 (DDP, gloo, CPU).

    python tests/inference/mc_ddp_worker.py WEIGHTS DATA OUT_DIR DEVICES

Lightning's DDP launcher re-runs this script once per extra rank. Each rank writes ``rank{r}.json``: the
callback's results (the whole test set) and the figures of its own shard alone.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ltrain.inference import MCSettings
from ltrain.inference.callback import MCDropoutEvaluation

BATCH = 40


def mlp() -> nn.Sequential:
    """A user's dropout MLP for the 8x8 digits (64 -> 64 -> 64 -> 10)."""
    return nn.Sequential(
        nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, 10)
    )


class Net(L.LightningModule):
    """An outside project's module: the network at ``self.net``, its own test_step."""

    def __init__(self):
        super().__init__()
        self.net = mlp()

    def forward(self, x):
        return self.net(x)

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test/acc", (self(x).argmax(1) == y).float().mean())


def main(weights: str, data: str, out_dir: str, devices: int) -> None:
    torch.set_num_threads(1)
    module = Net()
    module.net.load_state_dict(torch.load(weights, weights_only=True))
    x, y = torch.load(data, weights_only=True).values()
    callback = MCDropoutEvaluation(MCSettings(samples=8, seed=1), plot=False)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        logger=False,
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.test(module, DataLoader(TensorDataset(x, y), batch_size=BATCH), verbose=False)
    shard = {}
    for arm, metric in (("deterministic", callback._det), ("mc_dropout", callback._mc)):
        # after compute() the states are this rank's own again: the figure of the shard alone
        n = float(metric.bin_count.sum())
        shard[arm] = {"ece": float((metric.bin_correct - metric.bin_confidence).abs().sum()) / n, "count": n}
    out = {"results": callback.results, "scored": callback.scored, "shard": shard}
    (Path(out_dir) / f"rank{trainer.global_rank}.json").write_text(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
