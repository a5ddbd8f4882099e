"""Compose ltrain's real config from Python (notebooks, tests), exactly as the ``ltrain`` CLI would."""

from __future__ import annotations

import os
import secrets
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


def unique_suffix() -> str:
    """``<pid>-<4 hex digits>``: in a run directory's name, after the time, so that two processes started in
    the same second (``ltrain seed=0 & ltrain seed=1 &``) never share one. Cached per config, so a run (and a
    multirun's jobs, which Hydra gives the master config's cache) resolves it once."""
    return f"{os.getpid()}-{secrets.token_hex(2)}"


OmegaConf.register_new_resolver("ltrain.sqlite_in", sqlite_url_in, replace=True)
OmegaConf.register_new_resolver("ltrain.unique", unique_suffix, use_cache=True, replace=True)


def compose_config(*overrides: str, config_name: str = "config") -> DictConfig:
    """The packaged ``config.yaml`` (or another primary config) with command-line style ``overrides``."""
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))
