"""Seeds -> mean ± std: aggregate the ``results.json`` files of a multirun into a table and a plot.

A run's results.json has either flat metrics (a plain ``ltrain`` run: ``test_acc`` ...) or
``{"arms": {arm: {metric: value}}}`` (a recipe). Every number in the table is recomputed from those
files, so a published figure can always be traced back to the runs that produced it.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ltrain.errors import LtrainError
from ltrain.io import atomic_write_bytes, atomic_write_json

FLAT_METRICS = ("test_acc", "test_loss", "best_val_acc")


@dataclass
class Cell:
    """One (arm, metric) over seeds."""

    values: list[float] = field(default_factory=list)
    seeds: list[Any] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        """Sample standard deviation (n - 1); 0 for a single run."""
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0


def collect(run_root: str | Path) -> tuple[dict[str, dict[str, Cell]], list[dict[str, Any]]]:
    """{arm: {metric: Cell}} from every results.json under ``run_root``, and the raw results."""
    run_root = Path(run_root)
    found = sorted(run_root.rglob("results.json"))
    # a recipe's arms write their own results.json below the recipe's: count each job once, at its top
    files = [
        f
        for f in found
        if not any((p / "results.json").is_file() for p in f.parent.parents if p.is_relative_to(run_root))
    ]
    if not files:
        raise LtrainError(f"no results.json under {run_root}: point dir= at a run or multirun directory")
    table: dict[str, dict[str, Cell]] = defaultdict(lambda: defaultdict(Cell))
    raw = []
    for f in files:
        res = json.loads(f.read_text())
        raw.append(res | {"_path": str(f)})
        arms = res.get("arms") or {"run": {k: res[k] for k in FLAT_METRICS if res.get(k) is not None}}
        if isinstance(res.get("source"), dict):  # a transfer recipe's model A
            arms = {"source (model A)": res["source"], **arms}
        for arm, metrics in arms.items():
            for metric, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    cell = table[arm][metric]
                    cell.values.append(float(value))
                    cell.seeds.append(res.get("seed"))
    return {a: dict(m) for a, m in table.items()}, raw


def markdown_table(table: dict[str, dict[str, Cell]], digits: int = 4) -> str:
    """Arms as rows, metrics as columns, each cell ``mean ± std``; the seed count in the last column."""
    metrics = sorted({m for arm in table.values() for m in arm})
    lines = ["| arm | " + " | ".join(metrics) + " | seeds |", "|---" * (len(metrics) + 2) + "|"]
    for arm, cells in table.items():
        row = [f"{cells[m].mean:.{digits}f} ± {cells[m].std:.{digits}f}" if m in cells else "" for m in metrics]
        n = max(len(c.values) for c in cells.values())
        lines.append(f"| {arm} | " + " | ".join(row) + f" | {n} |")
    return "\n".join(lines)


def plot_arms(table: dict[str, dict[str, Cell]], metric: str, out_png: str | Path, title: str = "") -> Path | None:
    """Bar chart of ``metric`` per arm with the std as error bars and every seed as a dot."""
    arms = [a for a in table if metric in table[a]]
    if not arms:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(arms)), 3.5))
    for i, arm in enumerate(arms):
        cell = table[arm][metric]
        ax.bar(i, cell.mean, yerr=cell.std, capsize=6, alpha=0.6)
        ax.scatter([i] * len(cell.values), cell.values, color="k", s=12, zorder=3)
    ax.set_xticks(range(len(arms)), arms)
    ax.set_ylabel(metric)
    import textwrap

    ax.set_title("\n".join(textwrap.wrap(title, width=max(30, int(11 * fig.get_figwidth())))), fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return Path(out_png)


def write_report(
    run_root: str | Path,
    metric: str = "test_acc",
    out_dir: str | Path | None = None,
    title: str | None = None,
    metrics: list[str] | None = None,
) -> dict[str, Any]:
    """Write report.md, report.json and report.png for the runs under ``run_root``; return the summary.

    ``metrics`` keeps only those columns (default: every metric the runs recorded).
    """
    run_root = Path(run_root)
    out_dir = Path(out_dir) if out_dir else run_root
    out_dir.mkdir(parents=True, exist_ok=True)
    table, raw = collect(run_root)
    if metrics:
        table = {arm: {m: c for m, c in cells.items() if m in metrics} for arm, cells in table.items()}
    hardware = sorted({r.get("hardware", "unknown") for r in raw})
    recipes = sorted({str(r.get("recipe", r.get("model", ""))) for r in raw})
    title = title or ", ".join(recipes)
    md = markdown_table(table)
    text = (
        f"## {title}\n\n{md}\n\nmean ± sample std over seeds {sorted({r.get('seed') for r in raw}, key=str)}; "
        f"hardware: {'; '.join(hardware)}. Generated by `ltrain-report dir={run_root}`.\n"
    )
    atomic_write_bytes(out_dir / "report.md", text.encode())
    summary = {
        arm: {
            m: {"mean": c.mean, "std": c.std, "n": len(c.values), "values": c.values, "seeds": c.seeds}
            for m, c in cells.items()
        }
        for arm, cells in table.items()
    }
    atomic_write_json(out_dir / "report.json", {"title": title, "hardware": hardware, "arms": summary})
    png = plot_arms(table, metric, out_dir / "report.png", title)
    return {"markdown": text, "summary": summary, "plot": str(png) if png else None}
