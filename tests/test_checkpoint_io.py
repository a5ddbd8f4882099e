"""Checksummed, atomic checkpoint files (ltrain.checkpoint_io): round trip, damage named, no partial file.

Plain calls of the Lightning CheckpointIO plugin on small state dicts; no Trainer.
"""

from __future__ import annotations

import hashlib
import resource
import signal

import pytest
import torch

from ltrain.checkpoint_io import ChecksummedCheckpointIO, verify_checkpoint
from ltrain.errors import LtrainError

MARK = 1234.5678  # a value whose float32 bytes are easy to find in the file


def checkpoint(value: float = MARK, n: int = 64) -> dict:
    return {"state_dict": {"w": torch.full((n,), value), "b": torch.arange(4.0)}, "epoch": 3, "global_step": 30}


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_round_trip_writes_the_file_and_its_sha256_and_loads_what_was_saved(tmp_path):
    io = ChecksummedCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint(checkpoint(), path)

    side = tmp_path / "last.ckpt.sha256"
    assert side.read_text().split() == [sha(path)]
    assert verify_checkpoint(path) is True
    loaded = io.load_checkpoint(path)
    assert loaded["epoch"] == 3 and loaded["global_step"] == 30
    assert torch.equal(loaded["state_dict"]["w"], torch.full((64,), MARK))
    assert torch.equal(loaded["state_dict"]["b"], torch.arange(4.0))
    assert leftovers(tmp_path) == []


def test_a_flipped_byte_inside_a_tensor_is_caught_and_the_file_named(tmp_path):
    io = ChecksummedCheckpointIO()
    path = tmp_path / "epoch=2.ckpt"
    io.save_checkpoint(checkpoint(), path)
    data = bytearray(path.read_bytes())
    at = data.find(torch.tensor([MARK]).numpy().tobytes())
    assert at > 0
    data[at] ^= 0x01
    path.write_bytes(bytes(data))

    # torch's zip reader does not check CRCs: the damaged file loads, with another value in it
    damaged = torch.load(path, weights_only=True)
    assert not torch.equal(damaged["state_dict"]["w"], torch.full((64,), MARK))
    with pytest.raises(LtrainError) as err:
        verify_checkpoint(path)
    assert str(path) in str(err.value) and "epoch=2.ckpt.sha256" in str(err.value)
    assert "resume=" in str(err.value)  # says what to do


def test_a_truncated_file_is_caught(tmp_path):
    io = ChecksummedCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint(checkpoint(), path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(LtrainError, match="corrupt or truncated"):
        verify_checkpoint(path)


def test_a_checkpoint_without_sidecar_is_not_verified_but_not_refused(tmp_path):
    path = tmp_path / "elsewhere.ckpt"
    torch.save(checkpoint(), path)
    assert verify_checkpoint(path) is False


def test_the_sidecar_keeps_the_previous_hash_so_a_crash_between_the_two_renames_keeps_the_old_file(tmp_path):
    io = ChecksummedCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint(checkpoint(1.0), path)
    first = path.read_bytes()
    io.save_checkpoint(checkpoint(2.0), path)
    second = path.read_bytes()
    assert (tmp_path / "last.ckpt.sha256").read_text().split() == [
        hashlib.sha256(second).hexdigest(),
        hashlib.sha256(first).hexdigest(),
    ]
    path.write_bytes(first)  # what a kill after the sidecar's rename and before the file's leaves
    assert verify_checkpoint(path) is True

    io.save_checkpoint(checkpoint(3.0), path)  # only ONE previous hash is kept
    path.write_bytes(first)
    with pytest.raises(LtrainError):
        verify_checkpoint(path)


def test_a_write_that_fails_midway_leaves_the_old_checkpoint_whole_and_accepted(tmp_path):
    io = ChecksummedCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint(checkpoint(1.0), path)
    old = path.read_bytes()

    # the disk "fills" 64 KiB into the write of a ~1 MB checkpoint (EFBIG instead of SIGXFSZ)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
    try:
        with pytest.raises(OSError):
            io.save_checkpoint(checkpoint(2.0, n=250_000), path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)

    assert path.read_bytes() == old
    assert verify_checkpoint(path) is True
    assert leftovers(tmp_path) == []  # the half-written temporary file is gone


def test_an_unpicklable_checkpoint_changes_nothing(tmp_path):
    io = ChecksummedCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint(checkpoint(1.0), path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(Exception, match=r"pickle|lambda"):
        io.save_checkpoint({"callback": lambda: None}, path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_removing_a_checkpoint_removes_its_sidecar(tmp_path):
    io = ChecksummedCheckpointIO()
    path = tmp_path / "epoch=0.ckpt"
    io.save_checkpoint(checkpoint(), path)
    io.remove_checkpoint(path)
    assert list(tmp_path.iterdir()) == []
