"""Cost of MC dropout relative to ONE deterministic forward pass: ltrain's fast path vs a naive loop.

    python bench/mc_dropout.py                 # T=30; (a) timm resnet18 drop_rate=0.5, (b) the chapter's MLP
    python bench/mc_dropout.py --samples 20 --repeats 7 --image-size 224 --batch 8

Both sides of every ratio are measured in the same run, interleaved (deterministic pass, fast MC,
naive MC, then again), after one burn-in round; the medians are compared, so CPU contention from
other processes hits every side alike. The naive loop is ``mc_dropout(..., path="naive")``: T full
forward passes with the same dropout masks as the fast path (what wrappers such as baal's
MCDropoutModule do, but with timm's functional head dropout really active).

Targets (issue 15): (a) timm resnet18, T = 30: fast <= 1.15x one forward pass; (b) the chapter's MLP
(dropout after every hidden layer, batch 1024), T = 30: fast <= 40x one forward pass (the stochastic tail
alone is about 30x: ELU and the 100x100 matmuls of 30 samples; the masks are drawn as 24-bit integers).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from ltrain.inference import mc_dropout
from ltrain.models import build_mlp


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(model: torch.nn.Module, x: torch.Tensor, samples: int, repeats: int) -> dict[str, float]:
    """Median seconds of one deterministic pass, the fast MC path and the naive loop, interleaved."""
    model.eval()

    def deterministic():
        with torch.no_grad():
            model(x)

    sides = {
        "forward": deterministic,
        "fast": lambda: mc_dropout(model, x, samples=samples, seed=0, path="fast"),
        "naive": lambda: mc_dropout(model, x, samples=samples, seed=0, path="naive"),
    }
    for fn in sides.values():  # burn-in: allocator, oneDNN kernels, lazy imports
        fn()
    times: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(repeats):
        for name, fn in sides.items():
            times[name].append(timed(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=30, help="T, MC samples")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (median reported)")
    parser.add_argument("--image-size", type=int, default=224, help="resnet18 input size")
    parser.add_argument("--batch", type=int, default=8, help="resnet18 batch")
    parser.add_argument("--mlp-batch", type=int, default=1024, help="MLP batch (28x28 inputs)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import timm

    torch.manual_seed(0)
    cases = {
        f"(a) timm resnet18 drop_rate=0.5, {args.batch}x3x{args.image_size}x{args.image_size}": (
            timm.create_model("resnet18", drop_rate=0.5),
            torch.randn(args.batch, 3, args.image_size, args.image_size),
            args.repeats,
        ),
        f"(b) MLP 784-5x100(ELU, dropout 0.2 after each)-10, batch {args.mlp_batch}": (
            build_mlp(784, 10, hidden=(100,) * 5, dropout=0.2),
            torch.randn(args.mlp_batch, 1, 28, 28),
            args.repeats * 4,
        ),
    }
    print(
        f"MC dropout cost, T = {args.samples}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
        "median of interleaved repeats; cost = seconds / seconds of one deterministic forward pass"
    )
    print(f"{'case':<66} {'forward s':>10} {'fast x':>8} {'naive x':>8} {'naive/fast':>10} {'target':>8}")
    for (label, (model, x, repeats)), target in zip(cases.items(), (1.15, 40.0), strict=True):
        t = compare(model, x, args.samples, repeats)
        ratio = t["fast"] / t["forward"]
        verdict = "ok" if ratio <= target else "MISSED"
        print(
            f"{label:<66} {t['forward']:>10.4f} {ratio:>8.2f} {t['naive'] / t['forward']:>8.2f} "
            f"{t['naive'] / t['fast']:>10.2f} {'<= ' + str(target):>8} {verdict}"
        )


if __name__ == "__main__":
    main()
