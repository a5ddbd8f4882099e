"""Compose ltrain's real config from Python (notebooks, tests), exactly as the ``ltrain`` CLI would."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from ltrain.paths import conf_dir


def sqlite_url_in(directory: str, filename: str = "optuna.db") -> str:
    """``sqlite:///<directory>/<filename>``, creating the directory: Optuna opens the database before Hydra
    creates the sweep directory it belongs in (``${ltrain.sqlite_in:${hydra.sweep.dir}}`` in a config)."""
    path = Path(directory).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / filename}"


OmegaConf.register_new_resolver("ltrain.sqlite_in", sqlite_url_in, replace=True)


def compose_config(*overrides: str, config_name: str = "config") -> DictConfig:
    """The packaged ``config.yaml`` (or another primary config) with command-line style ``overrides``."""
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))
