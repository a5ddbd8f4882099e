"""Make every batch's randomness a function of (run seed, epoch, batch), so a resumed run is bit-identical.

Lightning's checkpoints do not hold RNG states, and a saved state would not help: on resume Lightning
creates the train iterator at a different point than in an uninterrupted run, so the global RNG is at a
different place when the next epoch starts. Reseeding at every batch (dropout masks) and telling the
dataset the epoch (its augmentations draw from a per-example generator) removes that history.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.fabric.utilities.seed import seed_everything

from ltrain.seeding import Stream, derive_seed


class EpochSeed(L.Callback):
    """Seed python, numpy and torch at each training batch from (seed, epoch, batch index).

    What a user adds to get a bit-identical resume with shuffling and dropout: this callback, a
    ``seed_everything(seed)`` before building the Trainer, and ``Trainer(deterministic=True)``. Dropout
    masks then depend only on (seed, epoch, batch); a shuffling sampler that draws from torch's global
    generator draws at the same point of the same seeded stream; a dataset with ``set_epoch(epoch)`` is
    told the epoch (its augmentations should draw from a generator seeded by (seed, epoch, index)).

    Args:
        seed: the run's seed (default: ``torch.initial_seed()`` when fitting starts).

    Example::

        L.seed_everything(0)
        trainer = L.Trainer(deterministic=True, callbacks=[EpochSeed(0), ModelCheckpoint(save_last=True)])
        trainer.fit(module, datamodule=dm, ckpt_path="last")   # killed and rerun: the same final weights
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.seed is None:
            self.seed = torch.initial_seed()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dataset = getattr(trainer.train_dataloader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(trainer.current_epoch)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        seed = derive_seed(Stream.TRAIN_BATCH, self.seed, trainer.current_epoch, batch_idx, bits=32)
        seed_everything(seed, workers=True, verbose=False)
