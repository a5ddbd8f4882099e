"""bench/cache.py's report works with the smallest settings (``--epochs 1`` crashed on an empty median)."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "cache.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_cache", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_epoch_report_gives_the_measured_fit_and_says_later_epochs_were_not_measured():
    bench = _bench()
    run = bench.run_arm("b", "uncached", epochs=1)  # a real one-epoch fit of case (b)
    assert len(run["epochs"]) == 1 and run["fit_seconds"] > 0
    runs = {("b", arm): [run] for arm in bench.ARMS}
    text = bench.report(runs, ["b"], argparse.Namespace(epochs=1, repeats=1))
    assert "| uncached |" in text and "| n/a |" in text
    assert "later epochs: not measured (--epochs 1" in text and "1-epoch fit measured: uncached / cached = 1.0x" in text


def _run(case: str, arm: str, epochs: list[float]) -> dict:
    return {
        "case": case,
        "arm": arm,
        "epochs": epochs,
        "fit_seconds": sum(epochs),
        "peak_rss_mb": 1000.0,
        "train_examples": 290,
        "val_examples": 97,
        "val_acc": 0.1,
    }


def test_case_c_report_prints_the_three_acceptance_ratios_and_the_disk_arm():
    bench = _bench()
    runs = {
        ("c", "uncached"): [_run("c", "uncached", [80.0, 60.0, 60.0])],
        ("c", "cached"): [_run("c", "cached", [88.0, 1.0, 1.0])],
        ("c", "disk"): [_run("c", "disk", [90.0, 2.0, 2.0])],
        ("c", "floor"): [_run("c", "floor", [0.5, 0.8, 0.8])],
    }
    text = bench.report(runs, ["c"], argparse.Namespace(epochs={"c": 3}, repeats=1))
    assert "| disk | 90.00 | 2.000 |" in text
    assert "uncached / cached = **60.0x** ok (>= 50x)" in text  # later epochs: 60 / 1
    assert "cached / floor = **1.25x** ok (<= 1.3x)" in text
    assert "(precomputation included) / uncached first epoch = **1.10x** (88.00s vs 80.00s) ok (<= 1.3x)" in text
    assert "uncached / disk = 30.0x; disk / floor = 2.50x" in text
    runs[("c", "cached")] = [_run("c", "cached", [110.0, 1.5, 1.5])]
    text = bench.report(runs, ["c"], argparse.Namespace(epochs={"c": 3}, repeats=1))
    assert "**40.0x** MISSED (>= 50x)" in text and "**1.88x** MISSED (<= 1.3x)" in text
    assert "**1.38x** (110.00s vs 80.00s) MISSED (<= 1.3x)" in text


def test_an_arms_peak_rss_is_its_own_not_the_bench_parents():
    """ru_maxrss carries the parent's peak over fork and exec; the bench reads the arm's own VmHWM."""
    import resource
    import subprocess
    import sys

    import numpy as np

    held = np.ones(1024 * 2**20, dtype=np.uint8)  # 1 GiB touched: this process's peak is above it
    code = (
        "import importlib.util, resource, sys; "
        f"spec = importlib.util.spec_from_file_location('b', {str(BENCH)!r}); "
        "b = importlib.util.module_from_spec(spec); spec.loader.exec_module(b); "
        "print(b.peak_rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    del held
    own, inherited = (float(v) for v in out.stdout.split())
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 > 1024
    assert inherited > 1024  # what the bench used to report: at least the parent's peak
    assert 50 < own < 1024  # the child's own: python, torch and Lightning imported
