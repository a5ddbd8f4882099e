"""Checkpoints written atomically with a sha256 sidecar, so a damaged file is caught before resuming.

PyTorch's zip reader does not check CRCs: a checkpoint with flipped bytes inside a tensor loads without
complaint and resumes with garbage weights. ``ChecksummedCheckpointIO`` (a Lightning CheckpointIO
plugin) writes ``NAME.ckpt`` and ``NAME.ckpt.sha256``; :func:`ltrain.io.verify_checkpoint` compares them
(in the core layer, so loading weights can check a checkpoint without the Lightning plugin).

The two files cannot be replaced in one atomic step, so the sidecar lists the new hash AND the previous
one and is replaced first: a process killed between the two renames leaves the old checkpoint with a
sidecar that still accepts it.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ltrain.io import atomic_write_bytes, checksum_sidecar, verify_checkpoint

__all__ = ["ChecksummedCheckpointIO", "verify_checkpoint"]


class ChecksummedCheckpointIO(TorchCheckpointIO):
    """Atomic checkpoint writes (temp file, fsync, rename) with a sha256 sidecar next to each file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        side = checksum_sidecar(path)
        previous = side.read_text().split()[:1] if side.is_file() else []
        atomic_write_bytes(side, ("\n".join([digest, *previous]) + "\n").encode())
        atomic_write_bytes(path, data)

    def remove_checkpoint(self, path) -> None:
        super().remove_checkpoint(path)
        checksum_sidecar(Path(path)).unlink(missing_ok=True)
