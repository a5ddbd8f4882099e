"""Reliability diagram: accuracy against confidence per bin, one line per set of predictions."""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure


def plot_reliability(curves: dict[str, dict[str, torch.Tensor]], out_png: str | Path, title: str = "") -> Path:
    """Save a reliability diagram of ``{label: bins}`` (:meth:`CalibrationMetrics.bins` of each predictor).

    Left: accuracy vs mean confidence per bin (the diagonal is perfect calibration), with each
    label's ECE in the legend. Right: how many predictions fall in each confidence bin. Drawn on a
    ``matplotlib.figure.Figure``: the caller's pyplot backend is left alone.
    """
    fig = Figure(figsize=(10, 4.2))
    ax, hist = fig.subplots(1, 2)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    for i, (label, bins) in enumerate(curves.items()):
        ok = bins["count"] > 0
        weights = bins["count"][ok] / bins["count"].sum()
        ece = float((weights * (bins["accuracy"][ok] - bins["confidence"][ok]).abs()).sum())
        ax.plot(bins["confidence"][ok], bins["accuracy"][ok], marker="o", label=f"{label} (ECE {ece:.3f})")
        width = float(bins["edges"][1] - bins["edges"][0])
        centres = bins["edges"][:-1] + width * (i + 0.5) / len(curves)
        hist.bar(centres, bins["count"], width=width / len(curves), label=label, alpha=0.8)
    ax.set(xlabel="confidence (max probability)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    hist.set(xlabel="confidence", ylabel="predictions", yscale="log", xlim=(0, 1))
    hist.legend(fontsize=8)
    fig.suptitle(title or "reliability diagram")
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    return out_png
