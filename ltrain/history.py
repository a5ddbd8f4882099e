"""A run's metric history that survives resumes: ``logs/metrics.csv`` covers every epoch exactly once.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` when its folder is not empty, so a resumed run would keep
only the epochs after the resume. What this module adds:

- :func:`keep_history` trims the file to the epochs the checkpoint holds (rows of later epochs are redone
  by the resumed fit) and moves the rows it drops to ``logs/dropped-<time>.csv``, so nothing is deleted;
- :class:`HistoryCSVLogger` is Lightning's ``CSVLogger`` whose writer appends to that file (same header)
  instead of deleting it.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from ltrain.errors import LtrainError
from ltrain.io import atomic_write_bytes

METRICS_FILE = "metrics.csv"


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an existing ``metrics.csv`` is continued, never deleted."""

    def _check_log_dir_exists(self) -> None:  # Lightning's deletes metrics.csv here
        path = Path(self.metrics_file_path)
        if path.is_file():
            with open(path, newline="") as f:
                self.metrics_keys = sorted(next(csv.reader(f), []))


class HistoryCSVLogger(CSVLogger):
    """``CSVLogger(save_dir, name="", version="logs")`` that appends to the run's history (see the module)."""

    def __init__(self, save_dir: _PATH, version: str = "logs") -> None:
        super().__init__(save_dir=save_dir, name="", version=version)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows) of a CSV file; an unreadable file is named in the error."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            return list(reader.fieldnames or []), list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise LtrainError(f"cannot read the metric history {path}: {e}. Move it aside to start a new history") from e


def _csv_bytes(header: list[str], rows: list[dict[str, str]]) -> bytes:
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=header, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def _epoch(row: dict[str, str]) -> int | None:
    value = row.get("epoch")
    return int(float(value)) if value not in (None, "") else None


def epochs_done(checkpoint: Path | None) -> int:
    """How many epochs of a fit a checkpoint holds (0 for none): the epochs its resumed fit will not redo.

    A checkpoint saved at an epoch's end has processed that epoch (Lightning's epoch progress), so the
    resumed fit starts with the next one.
    """
    if checkpoint is None:
        return 0
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    progress = (state.get("loops") or {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
    return int(progress.get("processed", state.get("epoch", 0)))


def keep_history(log_dir: Path, source: Path | None, epochs: int) -> Path | None:
    """Make ``log_dir/metrics.csv`` hold the rows of epochs ``< epochs`` from ``source`` (a run's metrics.csv).

    Rows of later epochs (and, when ``source`` is this run's own file, rows from before a restart) are
    moved to ``log_dir/dropped-<UTC time>.csv``: the fit about to run logs those epochs again. Returns the
    file of dropped rows, if any.
    """
    target = log_dir / METRICS_FILE
    if source is None or not source.is_file():
        return None
    header, rows = read_rows(source)
    kept, dropped = [], []
    for row in rows:
        epoch = _epoch(row)
        (kept if epoch is not None and epoch < epochs else dropped).append(row)
    archive = None
    if dropped and source.resolve() == target.resolve():
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%f")
        archive = atomic_write_bytes(log_dir / f"dropped-{stamp}.csv", _csv_bytes(header, dropped))
    if kept:
        atomic_write_bytes(target, _csv_bytes(header, kept))
    elif target.is_file():
        target.unlink()
    return archive
