"""Small generated image folders for the streaming-data tests (random pixels, real JPEG/PNG files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_folder(root: Path, classes=("cat", "dog"), per_class: int = 10, size: int = 32, seed: int = 0) -> Path:
    """``root/<class>/<i>.jpg``: ``per_class`` random ``size``-pixel RGB JPEGs per class."""
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / c / f"{i:03d}.jpg", quality=90)
    return root


def truncated_jpeg(path: Path, size: int = 32) -> Path:
    """A JPEG cut in half (a copy interrupted): its header opens, its pixels do not decode."""
    import io

    buffer = io.BytesIO()
    pixels = np.random.default_rng(7).integers(0, 255, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path
