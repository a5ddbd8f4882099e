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
