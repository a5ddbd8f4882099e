"""Shared fixtures: the real config composed and shrunk for CPU tests (lightning-hydra-template style)."""

from __future__ import annotations

import os
import warnings

import pytest
from omegaconf import DictConfig

from ltrain.config import compose_config as ltrain_compose

os.environ.setdefault("PYTHONHASHSEED", "0")
warnings.filterwarnings("ignore", message=".*LeafSpec.*")

# What every composed test config gets: quiet, small, CPU.
SHRINK = [
    "trainer.enable_progress_bar=false",
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=1",
]


def compose_config(*overrides: str, shrink: bool = True) -> DictConfig:
    """The real ``conf/config.yaml`` with ``overrides`` (and the test shrink), as the CLI would see it."""
    return ltrain_compose(*(SHRINK if shrink else []), *overrides)


@pytest.fixture
def cfg_factory():
    return compose_config


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is ~10x faster than two contending ones."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _isolated_homes(tmp_path, monkeypatch):
    """Runs, zoo entries and caches of a test land in its own temporary directory."""
    monkeypatch.setenv("LTRAIN_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("LTRAIN_ZOO_HOME", str(tmp_path / "zoo_home"))
    monkeypatch.setenv("LTRAIN_CACHE", str(tmp_path / "cache"))
