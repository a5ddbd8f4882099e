"""Reliability diagram: accuracy against confidence per bin, one line per set of predictions."""

from __future__ import annotations

from pathlib import Path

import torch

from ltrain.inference.uncertainty import ece_from_bins, reliability_bins


def plot_reliability(
    predictions: dict[str, torch.Tensor], targets: torch.Tensor, out_png: str | Path, n_bins: int = 15, title: str = ""
) -> Path:
    """Save a reliability diagram comparing ``{label: (N, C) probabilities}`` on the same ``targets``.

    Left: accuracy vs mean confidence per bin (the diagonal is perfect calibration), with each
    label's ECE in the legend. Right: how many predictions fall in each confidence bin.
    """
    from matplotlib.figure import Figure  # no pyplot: drawing to a file must not switch the user's backend

    fig = Figure(figsize=(10, 4.2))
    (ax, hist) = fig.subplots(1, 2)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    width = 1.0 / n_bins
    for i, (label, probs) in enumerate(predictions.items()):
        bins = reliability_bins(probs.cpu(), targets.cpu(), n_bins)
        ok = bins["count"] > 0
        ax.plot(
            bins["confidence"][ok], bins["accuracy"][ok], marker="o", label=f"{label} (ECE {ece_from_bins(bins):.3f})"
        )
        centres = bins["edges"][:-1] + width * (i + 0.5) / len(predictions)
        hist.bar(centres, bins["count"], width=width / len(predictions), label=label, alpha=0.8)
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
