"""Image files on disk: listing a class-folder tree or a CSV of ``path,label``, checking them, decoding to RGB.

Only paths and labels are held; pixels are decoded when an example is asked for (in DataLoader workers).
What counts as an image is decided by extension (torchvision's list): other files (``notes.txt``,
``.DS_Store``) are not images and are left out, counted in one log line. A file with an image extension
that cannot be read is a *bad file*: ``bad_files=error`` refuses it naming the file, ``bad_files=skip``
leaves it out and logs how many and which.
"""

from __future__ import annotations

import csv
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ltrain.errors import LtrainError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
BAD_FILES = ("error", "skip")
CHECKS = ("header", "decode", "none")
FIX = "remove or replace it, then rerun (or set data.bad_files=skip to leave such files out)"


class BadImageError(LtrainError):
    """An image file that cannot be decoded, named in the message.

    Raised inside a DataLoader worker, torch re-raises it in the main process as
    ``BadImageError("Caught BadImageError in DataLoader worker process 0.\\nOriginal Traceback ...")``; the
    constructor keeps only the original message, so the user reads the file's name, not a worker traceback.
    """

    def __init__(self, text: str):
        marker = f"{type(self).__name__}: "
        if text.startswith(f"Caught {type(self).__name__}") and marker in text:
            text = text[text.rindex(marker) + len(marker) :].rstrip("\n")
        super().__init__(text)


@dataclass(frozen=True)
class FileList:
    """Image paths, their integer labels (indices into ``classes``) and the class names."""

    paths: list[Path]
    labels: list[int]
    classes: list[str]


def load_rgb(path: str | Path, mode: str = "RGB") -> Image.Image:
    """Decode ``path`` as an ``mode`` (RGB or L) PIL image.

    CMYK, grey (L, LA, I;16), palette (P) and RGBA images are converted; alpha is dropped, as torchvision's
    and timm's loaders do (a palette with a transparent colour goes through RGBA first, as PIL advises).
    """
    with Image.open(path) as img:
        if img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")
        if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit grey: scale to 8 bits, not clip
            img = img.point(lambda v: v / 256).convert("L")
        return img.convert(mode)


def decode_or_raise(path: str | Path, mode: str = "RGB") -> Image.Image:
    """:func:`load_rgb`, with any decode failure turned into a :class:`BadImageError` naming the file."""
    try:
        return load_rgb(path, mode)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadImageError(
            f"cannot read the image {path} ({type(e).__name__}: {e}): the file is damaged or not an image; "
            "remove or replace it, then rerun (data.check_files=decode finds every such file before training, "
            "data.bad_files=skip then leaves them out)"
        ) from None


def image_problem(path: Path, check: str = "header") -> str | None:
    """Why ``path`` is not a readable image (None if it is).

    ``header`` opens the file (format and size) and, for a JPEG or PNG whose end is not the format's end
    marker (a copy cut short), decodes it fully to be sure; ``decode`` always decodes; ``none`` trusts it.
    """
    if check == "none":
        return None
    try:
        with Image.open(path) as img:
            if check == "decode" or _looks_cut(path, img.format):
                img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def _looks_cut(path: Path, fmt: str | None) -> bool:
    if fmt not in ("JPEG", "PNG"):
        return False
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 64))
        tail = f.read().rstrip(b"\x00\r\n ")
    return not tail.endswith(b"\xff\xd9") if fmt == "JPEG" else b"IEND" not in tail[-12:]


def check_files(files: FileList, bad_files: str, check: str, where: str) -> FileList:
    """``files`` without its bad files (``skip``, logged) or an error naming the first (``error``)."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        problems = list(pool.map(lambda p: image_problem(p, check), files.paths))
    bad = [(p, why) for p, why in zip(files.paths, problems, strict=True) if why is not None]
    if not bad:
        return files
    if bad_files == "error":
        path, why = bad[0]
        more = f" ({len(bad) - 1} more bad files in {where})" if len(bad) > 1 else ""
        raise BadImageError(f"cannot read the image {path} ({why}): the file is damaged or not an image; {FIX}{more}")
    names = ", ".join(str(p) for p, _ in bad[:5]) + (", ..." if len(bad) > 5 else "")
    log.warning("data.bad_files=skip: left out %d unreadable image file(s) in %s: %s", len(bad), where, names)
    keep = [i for i, why in enumerate(problems) if why is None]
    return FileList([files.paths[i] for i in keep], [files.labels[i] for i in keep], files.classes)


def scan_class_folders(root: Path) -> FileList:
    """``root/<class>/**/<image>`` (torchvision's ImageFolder layout): classes sorted by name.

    Refused: a root with no class folders, a class folder with no image files, fewer than 2 classes.
    """
    if not root.is_dir():
        raise LtrainError(f"data.root={root} is not a folder; point it at a folder of <class>/<image> files")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise LtrainError(f"no class folders under {root}: expected {root}/<class>/<image>.jpg|png")
    paths: list[Path] = []
    labels: list[int] = []
    ignored: list[Path] = []
    for label, name in enumerate(classes):
        found = 0
        for folder, dirs, names in os.walk(root / name, followlinks=True):
            dirs.sort()
            for file in sorted(names):
                path = Path(folder) / file
                if file.startswith("."):
                    continue
                if path.suffix.lower() not in IMAGE_EXTENSIONS:
                    ignored.append(path)
                    continue
                paths.append(path)
                labels.append(label)
                found += 1
        if found == 0:
            raise LtrainError(
                f"the class folder {root / name} has no image files ({', '.join(IMAGE_EXTENSIONS)}): "
                "add images to it or remove the folder"
            )
    if ignored:
        names = ", ".join(str(p.relative_to(root)) for p in ignored[:5]) + (", ..." if len(ignored) > 5 else "")
        log.info("%s: ignored %d file(s) that are not images by extension: %s", root, len(ignored), names)
    _check_two_classes(classes, str(root))
    return FileList(paths, labels, classes)


def read_image_list(csv_path: Path, classes: list[str] | None = None) -> FileList:
    """A CSV of ``path,label`` rows (an optional header ``path,label``); paths relative to the CSV's folder.

    Labels are class names (or numbers, sorted numerically); ``classes`` fixes the names (a test list must
    use the train list's). Refused: a missing file, an empty label, a row without two columns.
    """
    if not csv_path.is_file():
        raise LtrainError(f"the image list {csv_path} is not a file; point data.csv at a CSV of path,label rows")
    rows: list[tuple[int, str, str]] = []
    with open(csv_path, newline="") as f:
        for n, row in enumerate(csv.reader(f), start=1):
            if not row or (n == 1 and [c.strip().lower() for c in row] == ["path", "label"]):
                continue
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                raise LtrainError(f"{csv_path} line {n}: expected 'path,label', got {','.join(row)!r}")
            rows.append((n, row[0].strip(), row[1].strip()))
    if not rows:
        raise LtrainError(f"the image list {csv_path} has no rows; expected lines of path,label")
    names = sorted({r[2] for r in rows}, key=lambda s: (0, int(s), s) if s.lstrip("-").isdigit() else (1, 0, s))
    if classes is None:
        classes = names
        _check_two_classes(classes, str(csv_path))
    lookup = {c: i for i, c in enumerate(classes)}
    paths, labels = [], []
    for n, file, label in rows:
        if label not in lookup:
            raise LtrainError(f"{csv_path} line {n}: label {label!r} is not one of the train list's classes {classes}")
        path = Path(file) if Path(file).is_absolute() else csv_path.parent / file
        if not path.is_file():
            raise LtrainError(f"{csv_path} line {n}: the image {path} does not exist; fix the path or drop the row")
        paths.append(path)
        labels.append(lookup[label])
    return FileList(paths, labels, classes)


def _check_two_classes(classes: list[str], where: str) -> None:
    if len(classes) < 2:
        raise LtrainError(
            f"{where} has {len(classes)} class ({classes}): a classifier needs at least 2; "
            "add a folder (or label) per class"
        )


def file_stamp(path: Path) -> str:
    """``path size mtime_ns``: what the content digest of a file list hashes instead of the pixels."""
    st = path.stat()
    return f"{path}\t{st.st_size}\t{st.st_mtime_ns}"
