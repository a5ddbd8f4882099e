"""Checkpoints written atomically with a sha256 sidecar, so a damaged file is caught before resuming.

PyTorch's zip reader does not check CRCs: a checkpoint with flipped bytes inside a tensor loads without
complaint and resumes with garbage weights. ``ChecksummedCheckpointIO`` (a Lightning CheckpointIO
plugin) writes ``NAME.ckpt`` and ``NAME.ckpt.sha256``; :func:`verify_checkpoint` compares them.

The two files cannot be replaced in one atomic step, so the sidecar lists the new hash AND the previous
one and is replaced first: a process killed between the two renames leaves the old checkpoint with a
sidecar that still accepts it.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ltrain.errors import LtrainError
from ltrain.io import atomic_write_bytes, sha256_file

SUFFIX = ".sha256"


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + SUFFIX)


class ChecksummedCheckpointIO(TorchCheckpointIO):
    """Atomic checkpoint writes (temp file, fsync, rename) with a sha256 sidecar next to each file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        side = _sidecar(path)
        previous = side.read_text().split()[:1] if side.is_file() else []
        atomic_write_bytes(side, ("\n".join([digest, *previous]) + "\n").encode())
        atomic_write_bytes(path, data)

    def remove_checkpoint(self, path) -> None:
        super().remove_checkpoint(path)
        _sidecar(Path(path)).unlink(missing_ok=True)


RESUME_FIX = "Resume from another checkpoint (resume=PATH) or start afresh (resume=null)"


def verify_checkpoint(path: str | os.PathLike, fix: str = RESUME_FIX) -> bool:
    """True if ``path`` matches its sidecar; False if it has none (a checkpoint from elsewhere).

    Raises LtrainError when the sidecar exists and the file matches none of its hashes; ``fix`` (what the
    user can do instead) ends the message.
    """
    path = Path(path)
    side = _sidecar(path)
    if not side.is_file():
        return False
    if sha256_file(path) not in side.read_text().split():
        raise LtrainError(
            f"checkpoint {path} is corrupt or truncated (its sha256 does not match {side.name}).\n  {fix}"
        )
    return True
