"""Write a dataset out as an image folder (torchvision's ImageFolder layout) that ``data=image_folder`` streams.

    from ltrain.data import FashionMnistIdx, write_image_folder
    write_image_folder(FashionMnistIdx(root="/usr/share/fashion-mnist"), "~/fashion_jpg", size=224)
    # -> ~/fashion_jpg/train/<class>/00000.jpg ... and ~/fashion_jpg/test/<class>/... (the official split)

Recipes and benches use it to get real JPEG files of a known dataset (no photo dataset is available
offline); it is not needed to train on one's own photos.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ltrain.data.base import Arrays, ImageClassificationData
from ltrain.errors import LtrainError

FORMATS = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "bmp": "BMP"}


def write_image_folder(
    source: ImageClassificationData | Arrays | tuple[torch.Tensor, torch.Tensor],
    root: str | Path,
    size: int | None = None,
    format: str = "jpg",
    quality: int = 95,
    class_names: Sequence[str] | None = None,
    workers: int | None = None,
    keep_label_order: bool = False,
) -> Path:
    """Write ``source``'s images under ``root`` and return ``root``.

    Args:
        source: a DataModule (its raw loaded arrays: all examples, before any split or subset), an
            :class:`~ltrain.data.base.Arrays`, or ``(images, labels)`` with uint8 images (N, C, H, W), C 1 or 3.
        root: with an official test split, ``root/train/<class>/`` and ``root/test/<class>/``; otherwise
            ``root/<class>/``. Files are named by their index in the source (``00042.jpg``).
        size: resize every image to ``size`` x ``size`` (bicubic) before writing; None keeps the size.
        format: jpg, png, webp or bmp. quality: the JPEG/WebP quality.
        class_names: folder names (default: the source's class names, else the label numbers); characters
            other than letters, digits, ``-``, ``_`` and ``.`` become ``_`` (``T-shirt/top`` -> ``T-shirt_top``).
        workers: encoding threads (default: the CPU count, at most 8).
        keep_label_order: prefix each folder with its label (``0_T-shirt_top``, ``1_Trouser``...), so that the
            folder's classes, sorted by name as ImageFolder sorts them, keep the source's label numbers, and a
            seeded split of the folder picks the same examples as the same split of the source.
    """
    if format.lower() not in FORMATS:
        raise LtrainError(f"format={format!r} is not one of {sorted(FORMATS)}")
    if isinstance(source, ImageClassificationData):
        source = source.load_arrays()
    if isinstance(source, tuple):
        source = Arrays(*source)
    names = folder_names(
        class_names or source.class_names or [str(c) for c in range(int(source.train_y.max()) + 1)], keep_label_order
    )
    root = Path(root).expanduser()
    parts = [(root, source.train_x, source.train_y)]
    if source.test_x is not None:
        parts = [(root / "train", source.train_x, source.train_y), (root / "test", source.test_x, source.test_y)]
    jobs = []
    for folder, images, labels in parts:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise LtrainError(f"images must be uint8 (N, 1|3, H, W); got {images.dtype} {tuple(images.shape)}")
        for name in names:
            (folder / name).mkdir(parents=True, exist_ok=True)
        width = max(5, len(str(len(labels))))
        for i, label in enumerate(labels.tolist()):
            jobs.append((images[i], folder / names[label] / f"{i:0{width}d}.{format.lower()}"))
    fmt = FORMATS[format.lower()]

    def write(job: tuple[torch.Tensor, Path]) -> None:
        image, path = job
        array = image.permute(1, 2, 0).numpy()
        img = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else np.ascontiguousarray(array))
        if size is not None and img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BICUBIC)
        tmp = path.with_name(f".{path.name}.tmp")
        img.save(tmp, format=fmt, **({"quality": quality} if fmt in ("JPEG", "WEBP") else {}))
        os.replace(tmp, path)  # a half-written file is never left under its real name

    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(write, jobs))
    return root


def folder_names(names: Sequence[str], keep_label_order: bool = False) -> list[str]:
    """Class folder names: path separators and other odd characters replaced; with ``keep_label_order``, prefixed
    with the zero-padded label so that sorting by name keeps the label order."""
    safe = [re.sub(r"[^\w\-.]+", "_", str(n).strip()) or "_" for n in names]
    if keep_label_order:
        width = len(str(len(safe) - 1))
        safe = [f"{i:0{width}d}_{n}" for i, n in enumerate(safe)]
    if len(set(safe)) != len(safe):
        raise LtrainError(f"class names {list(names)} give clashing folder names {safe}; pass distinct class_names")
    return safe


def ensure_image_folder(
    source: ImageClassificationData | Arrays | tuple[torch.Tensor, torch.Tensor], root: str | Path, **write: Any
) -> bool:
    """Write ``source`` as an image folder at ``root`` unless ``root`` exists; True if this call wrote it.

    Atomic and safe when several processes (one sweep's jobs) start together: each writes into its own temporary
    folder next to ``root`` and renames it to ``root``; the first rename wins and the others discard their copy.
    ``root`` therefore only ever exists complete. ``write`` are :func:`write_image_folder`'s keyword options.
    """
    root = Path(root).expanduser()
    if root.is_dir():
        return False
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        write_image_folder(source, tmp, **write)
        try:
            os.rename(tmp, root)  # a directory rename refuses a non-empty target: the loser of a race lands here
        except OSError:
            if not root.is_dir():
                raise
            return False
        return True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
