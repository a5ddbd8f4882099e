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
from ltrain.resume import load_saved_config

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
    def std(self) -> float | None:
        """Sample standard deviation (n - 1); None for a single run (no spread to report)."""
        return statistics.stdev(self.values) if len(self.values) > 1 else None


def read_results(path: Path) -> dict[str, Any]:
    """A run's results.json; a damaged file is named in the error."""
    try:
        res = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LtrainError(
            f"cannot read {path}: {e}. The file is damaged (a run killed while writing it?): move that run "
            "out of dir= or rerun it"
        ) from e
    if not isinstance(res, dict):
        raise LtrainError(f"cannot read {path}: it holds no results mapping")
    return res


def run_config(results_file: Path) -> dict[str, Any] | None:
    """The flattened config (dotted keys) of the run that wrote ``results_file``, without its seed; None if absent."""
    from omegaconf import OmegaConf

    for path in (results_file.parent / "config.yaml", results_file.parent / ".hydra" / "config.yaml"):
        if path.is_file():
            flat = _flatten(OmegaConf.to_container(load_saved_config(path), resolve=False))
            return {k: v for k, v in flat.items() if k.split(".")[0] not in SEED_KEYS and not _seed_copy(k, v, flat)}
    return None


SEED_KEYS = ("seed", "resume")  # what may differ between the runs pooled into one row


def _seed_copy(key: str, value: str, flat: dict[str, str]) -> bool:
    """A ``*.seed`` key holding the run's own seed (``mc.seed: ${oc.select:seed,0}`` is saved resolved): it varies
    with the seed, so it must not split runs that differ only in their seed into rows of their own."""
    return key.rsplit(".", 1)[-1] == "seed" and value == flat.get("seed")


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out |= _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return {prefix: json.dumps(node, sort_keys=True, default=str)}


def config_groups(configs: list[dict[str, Any] | None]) -> tuple[list[str], list[str]]:
    """(a label per run, the keys that differ): runs whose configs differ only in the seed share a label.

    The label names the values of the differing keys (``optimizer.lr=0.01, trainer.max_epochs=5``); it is
    empty when every run has the same config.
    """
    known = [c for c in configs if c is not None]
    keys = sorted({k for c in known for k in c})
    # a key one run lacks and another holds as null is not a difference: a key added to ltrain's config later
    # with a null default (data.test_per_class) must not split runs made before and after it into two rows
    differing = [k for k in keys if len({c.get(k, "null") for c in known}) > 1]
    labels = []
    for c in configs:
        if c is None:
            labels.append("config unknown" if differing else "")
        else:
            labels.append(", ".join(f"{k}={json.loads(c[k]) if k in c else None}" for k in differing))
    return labels, differing


def collect(run_root: str | Path) -> tuple[dict[str, dict[str, Cell]], list[dict[str, Any]]]:
    """{row: {metric: Cell}} from every results.json under ``run_root``, and the raw results.

    Runs are pooled over seeds only: runs whose saved configs differ in anything but the seed get rows of their
    own, labelled with the differing keys (``arm [optimizer.lr=0.01]``).
    """
    run_root = Path(run_root)
    if not run_root.is_dir():
        raise LtrainError(f"dir={run_root} is not a folder: point dir= at a run or multirun directory")
    found = sorted(run_root.rglob("results.json"))
    # a recipe's arms write their own results.json below the recipe's: count each job once, at its top
    files = [
        f
        for f in found
        if not any((p / "results.json").is_file() for p in f.parent.parents if p.is_relative_to(run_root))
    ]
    if not files:
        raise LtrainError(f"no results.json under {run_root}: point dir= at a run or multirun directory")
    labels, _ = config_groups([run_config(f) for f in files])
    table: dict[str, dict[str, Cell]] = defaultdict(lambda: defaultdict(Cell))
    raw = []
    for f, label in zip(files, labels, strict=True):
        res = read_results(f)
        raw.append(res | {"_path": str(f), "_config": label})
        arms = res.get("arms") or {"run": {k: res[k] for k in FLAT_METRICS if res.get(k) is not None}}
        if isinstance(res.get("source"), dict):  # a transfer recipe's model A
            arms = {"source (model A)": res["source"], **arms}
        for arm, metrics in arms.items():
            for metric, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    cell = table[f"{arm} [{label}]" if label else arm][metric]
                    cell.values.append(float(value))
                    cell.seeds.append(res.get("seed"))
    return {a: dict(m) for a, m in table.items()}, raw


def _cell_text(cell: Cell, digits: int) -> str:
    """``mean ± std``, or the one value when there is one run (no spread to show)."""
    if len(cell.values) == 1:
        return f"{cell.mean:.{digits}f}"
    return f"{cell.mean:.{digits}f} ± {cell.std:.{digits}f}"


def markdown_table(table: dict[str, dict[str, Cell]], digits: int = 4) -> str:
    """Arms as rows, metrics as columns, each cell ``mean ± std``; the seed count in the last column."""
    metrics = sorted({m for arm in table.values() for m in arm})
    lines = ["| arm | " + " | ".join(metrics) + " | seeds |", "|---" * (len(metrics) + 2) + "|"]
    for arm, cells in table.items():
        row = [_cell_text(cells[m], digits) if m in cells else "" for m in metrics]
        n = max(len(c.values) for c in cells.values())
        lines.append(f"| {arm} | " + " | ".join(row) + f" | {n} |")
    return "\n".join(lines)


def plot_arms(table: dict[str, dict[str, Cell]], metric: str, out_png: str | Path, title: str = "") -> Path | None:
    """Bar chart of ``metric`` per arm with the std as error bars and every seed as a dot."""
    arms = [a for a in table if metric in table[a]]
    if not arms:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(4, 1.6 * len(arms)), 3.5))
    ax = fig.add_subplot()
    for i, arm in enumerate(arms):
        cell = table[arm][metric]
        ax.bar(i, cell.mean, yerr=cell.std or 0.0, capsize=6, alpha=0.6)
        ax.scatter([i] * len(cell.values), cell.values, color="k", s=12, zorder=3)
    ax.set_xticks(range(len(arms)), arms)
    ax.set_ylabel(metric)
    import textwrap

    ax.set_title("\n".join(textwrap.wrap(title, width=max(30, int(11 * fig.get_figwidth())))), fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
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
    _, differing = config_groups([run_config(Path(r["_path"])) for r in raw])
    groups = f"rows differ in {', '.join(differing)} (runs are pooled only over seeds); " if differing else ""
    text = (
        f"## {title}\n\n{md}\n\n{groups}mean ± sample std over seeds {sorted({r.get('seed') for r in raw}, key=str)}; "
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
    atomic_write_json(
        out_dir / "report.json", {"title": title, "hardware": hardware, "differing_keys": differing, "arms": summary}
    )
    png = plot_arms(table, metric, out_dir / "report.png", title)
    return {"markdown": text, "summary": summary, "plot": str(png) if png else None}
