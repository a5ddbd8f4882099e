"""Frozen-layer output caching, side by side in one run: uncached vs cached vs the floor, seconds per epoch.

    python bench/cache.py                           # both cases, 10 epochs, 3 interleaved repeats (medians)
    python bench/cache.py --cases a --repeats 1     # quicker

Cases (the 5,000 embedded MNIST digits, default split: 3,500 train / 500 val, batch 64, Adam):
  (a) timm resnet18 at 64x64 (3 channels), everything but the head (``fc``) frozen;
  (b) the book's 5x100 ELU MLP with the bottom 4 hidden layers frozen (``hidden4`` and the head train).
Arms, each in its own process (so peak memory is its own), run in interleaved order repeat after repeat:
  uncached   FreezeSchedule only: every step runs the frozen layers;
  cached     FreezeSchedule + FrozenFeatureCache (memory): the first epoch includes the precomputation;
  floor      the same Trainer training only the trainable top on a TensorDataset of features already in
             memory (their computation is not timed): the fastest the cached run could be.
Printed: first-epoch and median later-epoch seconds, the fit total, the 10-epoch total (measured with
--epochs 10; with fewer epochs, first + 9 x the later median), the ratios, peak RSS.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

ARMS = ("uncached", "cached", "floor")
CASES = {"a": "timm resnet18 64x64, all but the head frozen", "b": "5x100 MLP, bottom 4 hidden layers frozen"}


def run_arm(case: str, arm: str, epochs: int) -> dict:
    """Fit one arm in this process; per-epoch wall times (fit start -> end of epoch 0, then epoch to epoch)."""
    import timm

    from ltrain.callbacks import FreezeSchedule, FrozenFeatureCache
    from ltrain.callbacks.epoch_seed import EpochSeed
    from ltrain.data import MnistEmbedded
    from ltrain.data.base import EpochShuffleSampler
    from ltrain.models import build_mlp
    from ltrain.models.split import eval_mode, split_model
    from ltrain.modules.classifier import ClassifierModule

    torch.manual_seed(0)
    if case == "a":
        dm = MnistEmbedded(image_size=64, channels=3, batch_size=64)
        model = timm.create_model("resnet18", num_classes=10)
        trainable = "head"
    else:
        dm = MnistEmbedded(batch_size=64)
        model = build_mlp(784, 10)
        trainable = "top:2"
    dm.setup()

    class EpochTimes(L.Callback):
        def __init__(self):
            self.marks: list[float] = []

        def on_fit_start(self, trainer, pl_module):
            self.marks.append(time.perf_counter())

        def on_train_epoch_end(self, trainer, pl_module):
            self.marks.append(time.perf_counter())

    timer = EpochTimes()
    callbacks: list = [timer, EpochSeed(0)]
    datamodule = dm
    if arm == "floor":
        for name, p in model.named_parameters():  # what the schedule freezes, applied by hand for the split
            p.requires_grad_(name.startswith("fc") if case == "a" else name.startswith(("hidden4", "head")))
        probe = torch.stack([dm.splits["val"][i][0] for i in range(4)])
        split = split_model(model, probe)
        loaders = {}
        for s in ("train", "val"):
            ds = dm.splits[s]
            with torch.no_grad(), eval_mode(model):
                feats = torch.cat(
                    [
                        split.prefix(torch.stack([ds[i][0] for i in range(j, min(j + 256, len(ds)))]))
                        for j in range(0, len(ds), 256)
                    ]
                )
            loaders[s] = TensorDataset(feats, ds.labels)
        model = Top(split.suffix, [m for _, m in split.suffix_modules])
        datamodule = FeatureData(
            loaders["train"], loaders["val"], EpochShuffleSampler(len(loaders["train"]), torch.initial_seed())
        )
    else:
        callbacks.append(FreezeSchedule([{"trainable": trainable}]))
        if arm == "cached":
            callbacks.append(FrozenFeatureCache())
    module = ClassifierModule(model, 10, optimizer=lambda ps: torch.optim.Adam(ps, lr=1e-3))
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=True,
        callbacks=callbacks,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    total = time.perf_counter() - start
    marks = timer.marks
    return {
        "case": case,
        "arm": arm,
        "epochs": [b - a for a, b in itertools.pairwise(marks)],
        "fit_seconds": total,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "train_examples": len(dm.splits["train"]),
        "val_examples": len(dm.splits["val"]),
        "val_acc": float(trainer.callback_metrics.get("val/acc", float("nan"))),
    }


class Top(torch.nn.Module):
    """The trainable top alone: the split's suffix function over its modules (the floor arm's network)."""

    def __init__(self, suffix, modules):
        super().__init__()
        self.parts = torch.nn.ModuleList(dict.fromkeys(modules))  # registers the suffix's parameters
        self.suffix = suffix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.suffix(x)


class FeatureData(L.LightningDataModule):
    """Features already in memory, shuffled like the image DataModule (same sampler, batch 64)."""

    def __init__(self, train: TensorDataset, val: TensorDataset, sampler):
        super().__init__()
        self.train, self.val, self.sampler = train, val, sampler

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=64, sampler=self.sampler)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=512)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="a,b")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:  # a child process: one arm, JSON on the last line of stdout
        print(json.dumps(run_arm(args.case, args.arm, args.epochs)))
        return
    cases = args.cases.split(",")
    runs: dict[tuple[str, str], list[dict]] = {(c, a): [] for c in cases for a in ARMS}
    for r in range(args.repeats):
        for c in cases:
            order = ARMS if r % 2 == 0 else ARMS[::-1]  # alternate the order so drift hits every arm alike
            for a in order:
                out = subprocess.run(
                    [sys.executable, __file__, "--arm", a, "--case", c, "--epochs", str(args.epochs)],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if out.returncode != 0:
                    sys.exit(f"{c}/{a} failed:\n{out.stderr[-3000:]}")
                res = json.loads(out.stdout.strip().splitlines()[-1])
                runs[(c, a)].append(res)
                later = _later(res)
                print(
                    f"repeat {r} case {c} {a:8s}: first {res['epochs'][0]:.2f}s, later median "
                    f"{_seconds(later)} s, fit {res['fit_seconds']:.1f}s",
                    flush=True,
                )
    print(report(runs, cases, args))


def _later(run: dict) -> float | None:
    """The median of a run's epochs after the first; None with ``--epochs 1`` (there are none)."""
    return statistics.median(run["epochs"][1:]) if len(run["epochs"]) > 1 else None


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def report(runs: dict, cases: list[str], args: argparse.Namespace) -> str:
    import os

    lines = [
        f"# bench/cache.py: {args.epochs} epochs, {args.repeats} interleaved repeat(s), medians",
        f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
        f"load average at the end {os.getloadavg()[0]:.1f}",
        "",
    ]
    for c in cases:
        rows = {}
        for a in ARMS:
            rs = runs[(c, a)]
            rows[a] = {
                "first": statistics.median(r["epochs"][0] for r in rs),
                "later": statistics.median(_later(r) for r in rs) if args.epochs > 1 else None,
                "total": statistics.median(r["fit_seconds"] for r in rs),
                "rss": statistics.median(r["peak_rss_mb"] for r in rs),
                "acc": statistics.median(r["val_acc"] for r in rs),
            }
        n = runs[(c, "uncached")][0]
        lines += [
            f"## ({c}) {CASES[c]}: {n['train_examples']} train + {n['val_examples']} val examples",
            "",
            "| arm | first epoch s | later epochs s (median) | fit total s | peak RSS MB | val acc |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {a} | {v['first']:.2f} | {_seconds(v['later'])} | {v['total']:.1f} | {v['rss']:.0f} | {v['acc']:.3f} |"
            for a, v in rows.items()
        ]
        u, k, f = rows["uncached"], rows["cached"], rows["floor"]
        measured = [
            f"- {args.epochs}-epoch fit measured: uncached / cached = {u['total'] / k['total']:.1f}x "
            f"(cached first epoch includes the precomputation: {k['first']:.2f}s vs {u['first']:.2f}s uncached)",
        ]
        if u["later"] is None:  # --epochs 1: no later epoch to time, nothing to extrapolate from
            lines += ["", "- later epochs: not measured (--epochs 1; use --epochs 2 or more)", *measured, ""]
            continue
        ten = {a: v["first"] + 9 * v["later"] for a, v in rows.items()}  # first epoch + 9 later ones
        lines += [
            "",
            f"- later epochs: uncached / cached = **{u['later'] / k['later']:.1f}x**; "
            f"cached / floor = **{k['later'] / f['later']:.2f}x**",
            *measured,
            f"- 10 epochs (first + 9 x later median): uncached {ten['uncached']:.1f}s, cached "
            f"{ten['cached']:.1f}s, floor {ten['floor']:.1f}s; uncached / cached = "
            f"{ten['uncached'] / ten['cached']:.1f}x",
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
