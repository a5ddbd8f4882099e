"""Inference tests run single-threaded: their tensors are tiny, and on a shared 2-core machine
OpenMP's thread barriers made each small forward pass ~30x slower than one thread."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
