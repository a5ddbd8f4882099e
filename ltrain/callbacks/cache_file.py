"""The feature cache's file: written incrementally while the features are computed, read through a memory map.

The file is a valid safetensors file (``safetensors.safe_open`` reads it), laid out so that neither side ever
holds all the features in memory::

    8-byte header length | JSON header, space-padded to HEADER_BYTES | features | indices | labels

- **Writing** (:class:`FeatureWriter`): the header's place is reserved, the precomputation appends each
  batch's features as it comes (hashing them on the way), then indices and labels; the header (shapes,
  dtypes, key, sha256) is written last, into the reserved place, and the file is fsynced and renamed into
  place, so a reader sees the whole file or none.
- **Reading** (:class:`MappedFeatures`): the sha256 is checked by streaming the file (page cache, not this
  process's memory); the features are memory-mapped as a tensor (``numpy.memmap``, nothing read until
  indexed) and each training batch ``pread``s only its rows, so the process's resident memory holds one
  batch however big the file (``safetensors.torch.load_file`` would copy everything into memory, which is
  what this replaces).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import hashlib
import json
import os
import socket
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ltrain.errors import LtrainError

HEADER_BYTES = 4096  # the data starts on a page boundary: the features map straight onto pages
SAFETENSORS_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}  # fmt: skip
TORCH_DTYPES = {v: k for k, v in SAFETENSORS_DTYPES.items()}


class DamagedFile(Exception):
    """The file cannot be what the writer wrote (cut short, garbled, or its data not matching its sha256)."""


def _bytes_of(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu().contiguous()
    return t.view(-1).view(torch.uint8).numpy() if t.numel() else np.zeros(0, np.uint8)


def _spec(dtype: torch.dtype, shape: tuple[int, ...], start: int) -> dict[str, Any]:
    if dtype not in SAFETENSORS_DTYPES:
        raise ValueError(f"the feature cache cannot store {dtype} tensors (it stores {list(SAFETENSORS_DTYPES)})")
    nbytes = int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()
    return {"dtype": SAFETENSORS_DTYPES[dtype], "shape": list(shape), "data_offsets": [start, start + nbytes]}


def _digest(specs: dict[str, Any], data_sha: str) -> str:
    """The file's checksum: its tensors' dtypes, shapes and offsets, then the sha256 of the data section."""
    return hashlib.sha256((json.dumps(specs, sort_keys=True) + data_sha).encode()).hexdigest()


@functools.cache
def _libc_trim() -> Any:
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    return getattr(libc, "malloc_trim", None)


def release_freed_memory() -> None:
    """Hand the memory freed since the last call back to the OS (glibc's ``malloc_trim``; elsewhere nothing).

    The trunk allocates and frees its activations batch after batch; glibc raises its mmap threshold after
    the first large free and from then on serves them from its heap, which it does not shrink while other
    allocations sit above the holes: writing 625 MiB of features batch by batch left 300 MiB resident that
    nothing used. Trimming after each batch keeps the precomputation's resident memory at about one batch.
    """
    trim = _libc_trim()
    if trim is not None:
        trim(0)


def _temporary_prefix(path: Path) -> str:
    """``.<file name>.<host>-<pid>.``: whose temporary file it is, so an orphan can be told from a live one."""
    return f".{path.name}.{socket.gethostname()}-{os.getpid()}."


def remove_orphaned_temporaries(path: Path) -> list[Path]:
    """Delete the temporary files of ``path`` left by processes of this host that no longer run (a run killed
    during its precomputation); returns them. Another host's, or a live process's, are left alone: on a shared
    file system another run may be writing the same file right now."""
    host = socket.gethostname()
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        owner = tmp.name[len(path.name) + 2 : -len(".tmp")].rpartition(".")[0]  # <host>-<pid>.<random>.tmp
        owner_host, _, pid = owner.rpartition("-")
        if owner_host != host or not pid.isdigit() or _running(int(pid)):
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class FeatureWriter:
    """Write one (key, split, rank) file batch by batch: ``write`` each batch of features in row order, ``finish``."""

    def __init__(self, path: Path, key: str, shape: tuple[int, ...], dtype: torch.dtype, indices: torch.Tensor):
        self.path, self.key, self.shape, self.dtype, self.indices = Path(path), key, tuple(shape), dtype, indices
        self.nbytes = _spec(dtype, self.shape, 0)["data_offsets"][1]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_orphaned_temporaries(self.path)
        fd, self.tmp = tempfile.mkstemp(dir=self.path.parent, prefix=_temporary_prefix(self.path), suffix=".tmp")
        self.file = os.fdopen(fd, "wb")
        self.file.seek(HEADER_BYTES)
        self.sha = hashlib.sha256()
        self.written = 0

    def write(self, features: torch.Tensor) -> None:
        data = _bytes_of(features.to(self.dtype))
        self.file.write(memoryview(data))
        self.sha.update(memoryview(data))
        self.written += data.nbytes

    def finish(self, labels: torch.Tensor, metadata: dict[str, str]) -> str:
        """Write indices, labels and the header; fsync; rename into place. Returns the file's sha256."""
        if self.written != self.nbytes:
            raise RuntimeError(f"{self.path}: {self.written} feature bytes written, {self.nbytes} expected")
        specs = {"features": _spec(self.dtype, self.shape, 0)}
        start = self.nbytes
        for name, t in (("indices", self.indices), ("labels", labels)):
            specs[name] = _spec(t.dtype, tuple(t.shape), start)
            data = _bytes_of(t)
            self.file.write(memoryview(data))
            self.sha.update(memoryview(data))
            start += data.nbytes
        sha = _digest(specs, self.sha.hexdigest())
        header = json.dumps({**specs, "__metadata__": {**metadata, "key": self.key, "sha256": sha}}).encode()
        if len(header) > HEADER_BYTES - 8:
            raise RuntimeError(f"{self.path}: the header ({len(header)} bytes) does not fit in {HEADER_BYTES - 8}")
        self.file.seek(0)
        self.file.write(struct.pack("<Q", HEADER_BYTES - 8) + header.ljust(HEADER_BYTES - 8))
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.path)
        return sha

    def abort(self) -> None:
        """Close and remove the temporary file (the computation failed): nothing half-written is left."""
        self.file.close()
        Path(self.tmp).unlink(missing_ok=True)


def read_header(path: Path) -> dict[str, Any]:
    """The file's safetensors header (tensor specs and ``__metadata__``); DamagedFile if it is not one."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise DamagedFile(f"{size} bytes, shorter than a header")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, 100 * 2**20):
            raise DamagedFile(f"a header of {n} bytes in a file of {size}")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DamagedFile(f"its header is not JSON ({e})") from None
    specs = {k: v for k, v in header.items() if k != "__metadata__"}
    if sorted(specs) != ["features", "indices", "labels"] or not isinstance(header.get("__metadata__"), dict):
        raise DamagedFile(f"its header names {sorted(header)}, not features, indices, labels and metadata")
    end = max(s["data_offsets"][1] for s in specs.values())
    if 8 + n + end != size:
        raise DamagedFile(f"{size} bytes where its header says {8 + n + end} (cut short, or grown)")
    header["__data_start__"] = 8 + n
    return header


def verify(path: Path, header: dict[str, Any], chunk: int = 8 * 2**20) -> None:
    """Stream the data section through sha256 (reads go through the page cache, not this process's memory)."""
    sha = hashlib.sha256()
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        f.seek(header["__data_start__"])
        while n := f.readinto(buffer):
            sha.update(view[:n])
    specs = {k: v for k, v in header.items() if not k.startswith("__")}
    if _digest(specs, sha.hexdigest()) != header["__metadata__"].get("sha256"):
        raise DamagedFile("its tensors do not match the sha256 they were written with")


def read_small(path: Path, header: dict[str, Any], name: str) -> torch.Tensor:
    """A small tensor of the file (indices, labels), read into memory."""
    spec = header[name]
    start, end = spec["data_offsets"]
    with open(path, "rb") as f:
        f.seek(header["__data_start__"] + start)
        data = bytearray(f.read(end - start))
    if len(data) != end - start:
        raise DamagedFile(f"{name} cut short")
    return (
        torch.frombuffer(data, dtype=TORCH_DTYPES[spec["dtype"]]).reshape(spec["shape"])
        if data
        else (torch.empty(spec["shape"], dtype=TORCH_DTYPES[spec["dtype"]]))
    )


@dataclass
class MappedFeatures:
    """The features of a cache file: a memory-mapped tensor over it, and batches read row by row with ``pread``.

    ``tensor`` maps the file (numpy.memmap, copy-on-write, never written): nothing is read until it is
    indexed. Training reads its batches with :meth:`gather`, which ``pread``s the batch's rows (sorted, a
    run of neighbouring rows in one call) into a fresh tensor: the bytes go through the kernel's page cache,
    which the kernel may drop under pressure, and never stay mapped in this process, so its resident memory
    holds one batch, however big the file. (Indexing the map instead would map every page it touched until
    released, and Linux 6.18 maps a whole large folio, up to 2 MiB, per fault: 250 random 32 KiB rows
    mapped 280 MiB, so even releasing after each batch would not bound the RSS.)

    Picklable by path (a DataLoader worker started with ``spawn`` opens the file again; it never copies it).
    """

    path: Path
    offset: int
    shape: tuple[int, ...]
    dtype: torch.dtype

    def __post_init__(self) -> None:
        self._open()

    def _open(self) -> None:
        self.row_bytes = int(np.prod(self.shape[2:], dtype=np.int64)) * torch.empty((), dtype=self.dtype).element_size()
        self._fd: int | None = None
        if 0 in self.shape:  # nothing to map (mmap refuses a zero length)
            self.tensor = torch.empty(self.shape, dtype=self.dtype)
            return
        # numpy has no bfloat16: map its bytes as int16 and reinterpret them
        np_dtype = np.int16 if self.dtype == torch.bfloat16 else torch.empty((), dtype=self.dtype).numpy().dtype
        tensor = torch.from_numpy(np.memmap(self.path, dtype=np_dtype, mode="c", offset=self.offset, shape=self.shape))
        self.tensor = tensor.view(torch.bfloat16) if self.dtype == torch.bfloat16 else tensor

    def gather(self, view: int, rows: torch.Tensor) -> torch.Tensor:
        """Rows ``rows`` (sorted: a run of neighbouring rows is one read) of view ``view``, read from the file."""
        if not hasattr(os, "preadv") or 0 in self.shape:
            return self.tensor[view, rows]
        if self._fd is None:  # opened lazily: in the process that reads (a DataLoader worker has its own)
            self._fd = os.open(self.path, os.O_RDONLY)
        out = torch.empty((len(rows), *self.shape[2:]), dtype=self.dtype)
        buffer = memoryview(out.view(torch.uint8).numpy()).cast("B") if len(rows) else None
        base = self.offset + view * self.shape[1] * self.row_bytes
        index, n, i = rows.tolist(), len(rows), 0
        while i < n:
            j = i + 1
            while j < n and index[j] == index[j - 1] + 1:
                j += 1
            size = (j - i) * self.row_bytes
            got = os.preadv(
                self._fd, [buffer[i * self.row_bytes : i * self.row_bytes + size]], base + index[i] * self.row_bytes
            )
            if got != size:
                raise LtrainError(
                    f"FrozenFeatureCache: the cache file {self.path} was cut short while this run read it (row "
                    f"{index[i]} of view {view}: {got} of {size} bytes): something truncated or rewrote it in "
                    "place. Rerun: the next run finds it damaged and recomputes it"
                )
            i = j
        return out

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "offset": self.offset, "shape": self.shape, "dtype": self.dtype}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open()

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


def map_features(path: Path, header: dict[str, Any]) -> MappedFeatures:
    spec = header["features"]
    return MappedFeatures(
        path, header["__data_start__"] + spec["data_offsets"][0], tuple(spec["shape"]), TORCH_DTYPES[spec["dtype"]]
    )
