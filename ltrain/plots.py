"""Learning-curve plots from a run's CSV log."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path


def read_metrics(csv_path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Lightning's CSVLogger file as {metric: [(epoch, value), ...]} (blank cells skipped)."""
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            epoch = row.get("epoch")
            for key, value in row.items():
                if key in ("epoch", "step") or value in ("", None) or epoch in ("", None):
                    continue
                series[key].append((int(float(epoch)), float(value)))
    return dict(series)


def plot_learning_curves(csv_path: str | Path, out_png: str | Path, title: str = "") -> Path:
    """Loss and accuracy per epoch for train and val, side by side, saved as a PNG."""
    from matplotlib.figure import Figure  # no pyplot: drawing to a file must not switch the user's backend

    series = read_metrics(csv_path)
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for ax, what in zip(axes, ("loss", "acc"), strict=True):
        for stage in ("train", "val"):
            key = f"{stage}/{what}_epoch" if f"{stage}/{what}_epoch" in series else f"{stage}/{what}"
            if key in series:
                xs, ys = zip(*series[key], strict=True)
                ax.plot(xs, ys, marker="o", label=stage)
        ax.set_xlabel("epoch")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=100)
    return out_png
