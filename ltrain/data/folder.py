"""The user's own images: a folder with one sub-folder per class (torchvision's ImageFolder layout)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ltrain.data.base import Arrays, ImageClassificationData
from ltrain.errors import LtrainError


class ImageFolderData(ImageClassificationData):
    """Images under ``root/<class>/*.png|jpg``, resized to ``load_size`` and held in memory as uint8.

    If ``root`` has ``train/`` and ``test/`` sub-folders they are the official split; otherwise the test
    split is drawn with ``test_fraction``.
    """

    def __init__(self, root: str, load_size: int = 64, mode: str = "RGB", **kwargs):
        super().__init__(**kwargs)
        self.root = Path(root).expanduser()
        self.load_size = load_size
        self.mode = mode

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"image_folder:{self.root}"

    def prepare_data(self) -> None:
        if not self.root.is_dir():
            raise LtrainError(f"data.root={self.root} is not a folder; point it at a folder of <class>/<image> files")

    def _read(self, folder: Path, classes: list[str] | None = None):
        from torchvision.datasets import ImageFolder

        try:
            ds = ImageFolder(str(folder))
        except (FileNotFoundError, RuntimeError) as e:
            raise LtrainError(f"no images found under {folder}: expected {folder}/<class>/<image>.png|jpg ({e})") from e
        if classes is not None and ds.classes != classes:
            raise LtrainError(f"{folder} has classes {ds.classes}, but the train folder has {classes}")
        xs = []
        for path, _ in ds.samples:
            try:  # a file that is not an image, or one cut short, fails here (PIL decodes lazily, on convert)
                img = ds.loader(path).convert(self.mode).resize((self.load_size, self.load_size))
            except (OSError, SyntaxError, ValueError) as e:  # UnidentifiedImageError is an OSError
                raise LtrainError(
                    f"cannot read the image {path} ({type(e).__name__}: {e}): the file is damaged or not an "
                    "image; remove or replace it, then rerun"
                ) from e
            arr = np.asarray(img, dtype=np.uint8)
            xs.append(torch.from_numpy(arr.copy()).reshape(self.load_size, self.load_size, -1).permute(2, 0, 1))
        return torch.stack(xs), torch.tensor(ds.targets, dtype=torch.long), ds.classes

    def load_arrays(self) -> Arrays:
        self.prepare_data()
        if (self.root / "train").is_dir() and (self.root / "test").is_dir():
            x, y, classes = self._read(self.root / "train")
            tx, ty, _ = self._read(self.root / "test", classes)
            return Arrays(x, y, tx, ty, class_names=classes)
        x, y, classes = self._read(self.root)
        return Arrays(x, y, class_names=classes)
