"""Atomic writes: a temporary file in the same directory, fsync, then os.replace."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ltrain.errors import LtrainError


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


CHECKSUM_SUFFIX = ".sha256"


def checksum_sidecar(path: Path) -> Path:
    """``NAME.sha256`` next to ``NAME``: the hashes a checksummed checkpoint may have (newest first)."""
    return path.with_name(path.name + CHECKSUM_SUFFIX)


RESUME_FIX = "Resume from another checkpoint (resume=PATH) or start afresh (resume=null)"


def verify_checkpoint(path: str | os.PathLike, fix: str = RESUME_FIX) -> bool:
    """True if ``path`` matches its sidecar; False if it has none (a checkpoint from elsewhere).

    Raises LtrainError when the sidecar exists and the file matches none of its hashes; ``fix`` (what the
    user can do instead) ends the message.
    """
    path = Path(path)
    side = checksum_sidecar(path)
    if not side.is_file():
        return False
    if sha256_file(path) not in side.read_text().split():
        raise LtrainError(
            f"checkpoint {path} is corrupt or truncated (its sha256 does not match {side.name}).\n  {fix}"
        )
    return True
