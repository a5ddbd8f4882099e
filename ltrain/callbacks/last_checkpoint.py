"""``last.ckpt`` written at every epoch boundary AFTER the epoch's LR-scheduler step, for exact resume.

Lightning steps epoch-interval schedulers (ReduceLROnPlateau, ExponentialLR per epoch, ...) after every
checkpointing hook of that epoch, so ModelCheckpoint's files hold the scheduler one step behind, and
Lightning 2.6 does not replay that step on resume. Saving at the start of the next epoch (and when
training ends) captures the state a continuing run would have. ModelCheckpoint still keeps ``best.ckpt``.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L


class LastCheckpoint(L.Callback):
    """Save ``dirpath/last.ckpt`` when each epoch after the first starts and when training ends."""

    def __init__(self, dirpath: str | Path, filename: str = "last.ckpt") -> None:
        self.path = Path(dirpath) / filename

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch > 0:
            trainer.save_checkpoint(self.path)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.path)
