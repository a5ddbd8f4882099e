"""Shared fixtures: the real config composed and shrunk for CPU tests (lightning-hydra-template style)."""

from __future__ import annotations

import os
import warnings

import pytest
from omegaconf import DictConfig

from ltrain.config import compose_config as ltrain_compose
from ltrain.data import MnistEmbedded
from ltrain.data.base import Arrays
from ltrain.train import build_datamodule
from tests.loaded_digits import LoadedDigits

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
    monkeypatch.delenv("LTRAIN_ZOO_CATALOG", raising=False)  # the catalogue defaults to $LTRAIN_ZOO_HOME/catalog


# ---- The embedded digits, loaded once per session, in the two shapes tests in several folders use. ----
@pytest.fixture(scope="session")
def digits_datamodule():
    """The embedded MNIST digits as the app builds them (3,500 train / 500 val / 1,000 test), batch 32."""
    return build_datamodule(compose_config("data.batch_size=32"))


@pytest.fixture(scope="session")
def digit_arrays() -> Arrays:
    """The embedded digits' raw arrays, read once (``LoadedDigits`` serves them to any split)."""
    return MnistEmbedded().load_arrays()


@pytest.fixture(scope="session")
def pretext_digits(digit_arrays) -> MnistEmbedded:
    """The siamese_mnist split: 100 labelled, 50 val, 50 test per digit; 300 per digit left for pretext tasks."""
    dm = LoadedDigits(digit_arrays, train_per_class=100, val_fraction=0.1, test_fraction=0.1, split_seed=0)
    dm.setup()
    return dm  # read-only in tests: pair and pool modules never modify their source


# ---- Fashion-MNIST: `make test` installs it; where it cannot, its tests skip, counted, with the command. ----
def _fashion_mnist_installed() -> bool:
    from ltrain.data.idx import DEBIAN_FASHION_ROOT, find_idx_files
    from ltrain.errors import LtrainError

    try:
        return bool(find_idx_files(DEBIAN_FASHION_ROOT))
    except LtrainError:
        return False


FASHION_MISSING = (
    "Fashion-MNIST is not installed: run `apt-get update && apt-get install -y dataset-fashion-mnist` as root "
    "(make test does it where it can)"
)


def pytest_collection_modifyitems(config, items):
    if _fashion_mnist_installed():
        return
    for item in items:
        if item.get_closest_marker("fashion_mnist"):
            item.add_marker(pytest.mark.skip(reason=FASHION_MISSING))


# ---- Where each kill-and-resume test killed its victim (tests/killpoint.py), printed after the run. ----
_KILLS: list[str] = []


@pytest.fixture
def kill_report(request):
    """Call with a line saying where a kill landed; the lines are printed in the test summary."""
    return lambda line: _KILLS.append(f"{request.node.nodeid}: {line}")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if FASHION_MISSING in str(r.longrepr)]
    if skipped:
        terminalreporter.write_sep("=", f"{len(skipped)} tests skipped: {FASHION_MISSING}", yellow=True)
    if _KILLS:
        terminalreporter.write_sep("-", "where the kill-and-resume tests killed their victims")
        for line in _KILLS:
            terminalreporter.write_line(line)
