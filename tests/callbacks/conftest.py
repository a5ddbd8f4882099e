"""Fixtures of the callback tests (the FreezeSchedule helpers live in freeze_helpers.py)."""

import pytest

from tests.callbacks.freeze_helpers import load_digits


@pytest.fixture(scope="session")
def freeze_digits():
    """Real digits 0-4, 40 training images per digit, batches of 20 (10 steps per epoch)."""
    return load_digits()
