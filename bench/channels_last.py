"""model.channels_last: images/s of a timm model with NCHW vs NHWC weights, side by side in one process.

    python bench/channels_last.py                                   # tf_efficientnet_lite0, 224 px, 1 thread
    python bench/channels_last.py --model resnet50 --threads 2 --repeats 5

Both layouts are built from the same weights (``ltrain.models.build_model`` with and without
``channels_last``); each repeat times both, alternating which goes first, and the medians are reported:
- eval: forward passes in ``torch.inference_mode`` (what the cache's precomputation, validation and test do);
- train: forward + backward with the top ``--trainable`` layer groups trainable, the rest frozen (the shape of
  a fine-tuning phase: ``freeze=default``'s second phase trains the top 3).
The outputs of the two layouts are compared too (max absolute difference: rounding, not a different network).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch

from ltrain.models import build_model
from ltrain.models.groups import layer_groups


def _time(fn, batches: int) -> float:
    fn()  # warm-up: kernel selection and allocator
    start = time.perf_counter()
    for _ in range(batches):
        fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tf_efficientnet_lite0")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=2, help="timed batches per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (a 2-core machine with 2 loader workers: 1)"
    )
    parser.add_argument("--trainable", type=int, default=3, help="top layer groups trained in the train timing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = (3, args.size, args.size)
    models = {}
    for layout, cl in (("NCHW", False), ("NHWC", True)):
        torch.manual_seed(0)
        models[layout] = build_model({"name": args.model, "channels_last": cl}, 10, shape)
    x = torch.randn(args.batch_size, *shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        diff = (models["NCHW"].eval()(x) - models["NHWC"].eval()(x)).abs().max().item()
    for model in models.values():
        trainable = {name for group in layer_groups(model)[-args.trainable :] for name in group.param_names}
        for name, p in model.named_parameters():
            p.requires_grad_(name in trainable)

    def evaluate(model):
        model.eval()
        with torch.inference_mode():
            model(x)

    def train(model):
        model.train()
        model(x).sum().backward()

    results: dict[tuple[str, str], list[float]] = {}
    for r in range(args.repeats):
        order = ("NCHW", "NHWC") if r % 2 == 0 else ("NHWC", "NCHW")
        for what, fn in (("eval", evaluate), ("train", train)):
            for layout in order:
                seconds = _time(lambda m=models[layout], f=fn: f(m), args.batches)
                results.setdefault((what, layout), []).append(args.batches * args.batch_size / seconds)
    print(
        f"# bench/channels_last.py: {args.model} at {args.size} px, batch {args.batch_size}, {args.threads} thread(s)"
    )
    print()
    print(f"`python bench/channels_last.py {' '.join(sys.argv[1:])}`".replace(" `", "`"))
    print()
    print(
        f"{args.repeats} alternating repeats (medians), {args.batches} timed batches each; {os.cpu_count()} CPU "
        f"cores ({platform.machine()}), torch {torch.__version__}; max |NCHW - NHWC| logit difference {diff:.1e}."
    )
    print()
    print("| pass | NCHW img/s | NHWC img/s | **NHWC / NCHW** |")
    print("|---|---:|---:|---:|")
    for what in ("eval", "train"):
        a, b = (statistics.median(results[(what, layout)]) for layout in ("NCHW", "NHWC"))
        label = "eval (inference mode)" if what == "eval" else f"train (top {args.trainable} groups)"
        print(f"| {label} | {a:.1f} | {b:.1f} | **{b / a:.2f}x** |")


if __name__ == "__main__":
    main()
