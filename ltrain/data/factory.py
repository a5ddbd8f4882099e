"""Building the DataModule a config names (used by training, publishing and the recipes)."""

from __future__ import annotations

from omegaconf import DictConfig

from ltrain.data.base import ImageClassificationData
from ltrain.errors import instantiate


def build_datamodule(cfg: DictConfig) -> ImageClassificationData:
    """The DataModule of ``cfg.data``, set up (loaded, split, standardised)."""
    dm = instantiate(cfg.data, _convert_="all")
    dm.prepare_data()
    dm.setup()
    return dm
