"""Fixtures of the transfer tests (helpers live in freeze_helpers.py)."""

import pytest
import torch
from freeze_helpers import load_digits


@pytest.fixture(scope="session")
def digits():
    """Real digits 0-4, 40 training images per digit, batches of 20 (10 steps per epoch)."""
    return load_digits()


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is ~10x faster than two contending ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
