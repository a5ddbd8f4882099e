"""Make every batch's randomness a function of (run seed, epoch, batch), so a resumed run is bit-identical.

Lightning's checkpoints do not hold RNG states, and a saved state would not help: on resume Lightning
creates the train iterator at a different point than in an uninterrupted run, so the global RNG is at a
different place when the next epoch starts. Reseeding at every batch (dropout masks) and telling the
dataset the epoch (its augmentations draw from a per-example generator) removes that history.
"""

from __future__ import annotations

import lightning as L
from lightning.fabric.utilities.seed import seed_everything


class EpochSeed(L.Callback):
    """Seed python, numpy and torch at each training batch from (seed, epoch, batch index).

    Args:
        seed: the run's seed (default: ``torch.initial_seed()`` when fitting starts).
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.seed is None:
            import torch

            self.seed = torch.initial_seed()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dataset = getattr(trainer.train_dataloader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(trainer.current_epoch)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        seed = (self.seed * 1_000_003 + trainer.current_epoch) * 100_003 + batch_idx
        seed_everything(seed % 2**32, workers=True, verbose=False)
