"""Fixtures for the training-toolbox tests: the embedded digits loaded once per session."""

from __future__ import annotations

import pytest

from ltrain.train import build_datamodule
from tests.conftest import compose_config


@pytest.fixture(scope="session")
def digits():
    """The embedded MNIST digits (3,500 train / 500 val / 1,000 test), batch 32, loaded once."""
    return build_datamodule(compose_config("data.batch_size=32"))
