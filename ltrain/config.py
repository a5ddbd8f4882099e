"""Compose ltrain's real config from Python (notebooks, tests), exactly as the ``ltrain`` CLI would."""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from ltrain.paths import conf_dir


def compose_config(*overrides: str, config_name: str = "config") -> DictConfig:
    """The packaged ``config.yaml`` (or another primary config) with command-line style ``overrides``."""
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))
