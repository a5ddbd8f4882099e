"""Fixtures of the transfer tests (helpers live in freeze_helpers.py)."""

import pytest
from freeze_helpers import load_digits


@pytest.fixture(scope="session")
def digits():
    """Real digits 0-4, 40 training images per digit, batches of 20 (10 steps per epoch)."""
    return load_digits()
