"""Run by test_freeze_ddp.py: FreezeSchedule under real 2-process DDP (gloo); each rank saves its final weights.

Usage: python ddp_freeze_script.py OUT_DIR
"""

import sys
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: `tests.` imports resolve
from ltrain.callbacks import FreezeSchedule
from tests.callbacks.freeze_helpers import PlainNet, load_digits


class SaveWeights(L.Callback):
    def __init__(self, out: Path):
        self.out = out

    def on_train_start(self, trainer, pl_module):
        torch.save(pl_module.net.state_dict(), self.out / f"start{trainer.global_rank}.pt")

    def on_train_epoch_start(self, trainer, pl_module):
        rates = {g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups}
        torch.save(rates, self.out / f"rates{trainer.global_rank}_epoch{trainer.current_epoch}.pt")

    def on_train_end(self, trainer, pl_module):
        torch.save(pl_module.net.state_dict(), self.out / f"end{trainer.global_rank}.pt")


if __name__ == "__main__":
    out = Path(sys.argv[1])
    torch.set_num_threads(1)  # two ranks on a shared 2-core machine
    L.seed_everything(0)
    schedule = FreezeSchedule(
        [{"trainable": "head"}, {"at_epoch": 1, "trainable": "all", "lr_scale": 0.5}], model_attr="net", verbose=False
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=3,
        limit_train_batches=4,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        callbacks=[schedule, SaveWeights(out)],
    )
    trainer.fit(PlainNet(), load_digits())
