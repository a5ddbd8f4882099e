"""Pretraining tests share the embedded digits."""

from __future__ import annotations

import pytest

from ltrain.data import MnistEmbedded
from ltrain.data.base import Arrays


class LoadedDigits(MnistEmbedded):
    """The embedded digits, read once per test session (reading them costs seconds on a busy machine)."""

    def __init__(self, arrays: Arrays, **kwargs):
        super().__init__(**kwargs)
        self._arrays = arrays

    def load_arrays(self) -> Arrays:
        return self._arrays


@pytest.fixture(scope="session")
def digit_arrays() -> Arrays:
    return MnistEmbedded().load_arrays()


@pytest.fixture(scope="session")
def digits(digit_arrays) -> MnistEmbedded:
    """The siamese_mnist split: 100 labelled, 50 val, 50 test per digit; 300 per digit left for pretraining."""
    dm = LoadedDigits(digit_arrays, train_per_class=100, val_fraction=0.1, test_fraction=0.1, split_seed=0)
    dm.setup()
    return dm  # read-only in tests: pair and pool modules never modify their source


def quiet_trainer(**kwargs):
    import lightning as L

    defaults = {
        "accelerator": "cpu",
        "enable_progress_bar": False,
        "logger": False,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "deterministic": True,
    }
    return L.Trainer(**(defaults | kwargs))
