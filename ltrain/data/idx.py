"""Fashion-MNIST (or MNIST) from the four standard IDX files, gzipped or not, read directly."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from ltrain.data.base import Arrays, ImageClassificationData
from ltrain.errors import LtrainError

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DEBIAN_FASHION_ROOT = "/usr/share/datasets/fashion-mnist"
_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format): a magic number giving the dtype and rank, the dims, the data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (EOFError, OSError, zlib.error) as e:  # a .gz cut short (EOFError) or damaged (BadGzipFile, zlib.error)
        raise LtrainError(
            f"{path} is truncated or corrupt ({type(e).__name__}: {e}): re-download it "
            f"(on Debian/Ubuntu: sudo apt-get install --reinstall dataset-fashion-mnist)"
        ) from e
    if len(data) < 8 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise LtrainError(f"{path} is not an unsigned-byte IDX file (bad magic number); re-download it")
    rank = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank)]
    offset = 4 + 4 * rank
    expected = int(np.prod(dims))
    if len(data) - offset != expected:
        raise LtrainError(f"{path} is truncated: {len(data) - offset} bytes of data, expected {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def find_idx_files(root: str | Path) -> dict[str, Path]:
    """The four IDX files under ``root`` (``.gz`` or plain); a clear error naming how to get them."""
    root = Path(root).expanduser()
    found = {}
    for key, stem in _FILES.items():
        for name in (stem + ".gz", stem):
            if (root / name).is_file():
                found[key] = root / name
                break
    missing = [_FILES[k] for k in _FILES if k not in found]
    if missing:
        raise LtrainError(
            f"Fashion-MNIST IDX files not found in {root} (missing: {', '.join(m + '[.gz]' for m in missing)}).\n"
            f"  Offline on Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist  (puts them in {DEBIAN_FASHION_ROOT})\n"
            f"  Elsewhere: put the four files in a folder and pass data.root=/that/folder,\n"
            f"  or download them with data=fashion_mnist_download (needs internet),\n"
            f"  or use the embedded digits that need nothing: data=mnist_embedded"
        )
    return found


class FashionMnistIdx(ImageClassificationData):
    """Fashion-MNIST (60,000 train + 10,000 official test) from a folder of IDX files."""

    name = "fashion_mnist"

    def __init__(self, root: str = DEBIAN_FASHION_ROOT, class_names: list[str] | None = None, **kwargs):
        kwargs.setdefault("test_fraction", 0.0)
        super().__init__(**kwargs)
        self.root = root
        self._class_names = class_names or FASHION_CLASSES

    def prepare_data(self) -> None:
        find_idx_files(self.root)

    def load_arrays(self) -> Arrays:
        files = find_idx_files(self.root)
        arr = {k: torch.from_numpy(read_idx(p).copy()) for k, p in files.items()}
        return Arrays(
            arr["train_x"][:, None],
            arr["train_y"].long(),
            arr["test_x"][:, None],
            arr["test_y"].long(),
            class_names=list(self._class_names),
        )
