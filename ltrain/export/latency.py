"""Latency of two or more ways to run the same thing, measured side by side so that load hits them alike.

On a shared machine one variant timed after the other measures the neighbours as much as the variant:
here every round runs each variant once (alternating the order between rounds) and the median is reported.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def interleaved_latency(variants: dict[str, Callable[[], Any]], repeats: int = 20, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each variant, over ``repeats`` interleaved rounds after ``warmup`` rounds."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats} must be >= 1")
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants.items())
    for round_ in range(repeats):
        for name, fn in order if round_ % 2 == 0 else reversed(order):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}
