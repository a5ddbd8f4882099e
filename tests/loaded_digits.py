"""The embedded digits served from arrays read once per test session (reading them costs seconds on a busy machine)."""

from __future__ import annotations

from ltrain.data import MnistEmbedded
from ltrain.data.base import Arrays


class LoadedDigits(MnistEmbedded):
    """``MnistEmbedded`` over arrays already in memory: the splits, transforms and errors are MnistEmbedded's own."""

    def __init__(self, arrays: Arrays, **kwargs):
        super().__init__(**kwargs)
        self._arrays = arrays

    def load_arrays(self) -> Arrays:
        return self._arrays
