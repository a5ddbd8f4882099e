"""Frozen-layer output caching, side by side in one run: uncached vs cached vs the floor, seconds per epoch.

    python bench/cache.py                           # cases a and b: 10 epochs, 3 interleaved repeats (medians)
    python bench/cache.py --cases c --repeats 2     # the 224-px case: 3 epochs an arm (~25 min on 2 busy cores)
    python bench/cache.py --cases a --repeats 1     # quicker

Cases (a) and (b): the 5,000 embedded MNIST digits, default split: 3,500 train / 500 val, batch 64, Adam:
  (a) timm resnet18 at 64x64 (3 channels), everything but the head (``fc``) frozen;
  (b) the book's 5x100 ELU MLP with the bottom 4 hidden layers frozen (``hidden4`` and the head train).
Case (c), what users fine-tune: timm resnet50 (random weights: the timing is the same) at 224x224,
  everything but the head (``fc``) frozen, on a streamed folder of 400 generated 256-px JPEGs (bench/data.py's
  folder, made on first use under ``--cache-dir``): ``ImageFolderData(model_name="resnet50", augment="none",
  num_workers=2)``, timm's own eval preprocessing (resize 256 -> crop 224), split 293 train / 97 val / 10
  test, batch 64. Its default is ``--epochs 3`` (an uncached epoch is a minute or more on a CPU).
Arms, each in its own process (so peak memory is its own), run in interleaved order repeat after repeat:
  uncached   FreezeSchedule only: every step runs the frozen layers;
  cached     FreezeSchedule + FrozenFeatureCache (memory): the first epoch includes the precomputation;
  disk       (case c only, with --disk) the same with FrozenFeatureCache(storage="disk");
  floor      the same Trainer training only the trainable top on a TensorDataset of features already in
             memory (their computation is not timed): the fastest the cached run could be.
Printed: first-epoch and median later-epoch seconds, the fit total, the 10-epoch total (measured with
--epochs 10; with fewer epochs, first + 9 x the later median), the ratios, and each arm's peak RSS: VmHWM
of the arm's own process (its loader workers not included), read at the end of the fit.
Acceptance (case c, printed): later cached epochs >= 50x faster than uncached; the cached first epoch
(precompute included) <= 1.3x an uncached first epoch; cached later epochs <= 1.3x the floor's.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

DEFAULT_CACHE_DIR = os.environ.get("LTRAIN_BENCH_CACHE", "~/.cache/ltrain-bench/data")  # bench/data.py's

ARMS = ("uncached", "cached", "floor")
CASES = {
    "a": "timm resnet18 64x64, all but the head frozen",
    "b": "5x100 MLP, bottom 4 hidden layers frozen",
    "c": "timm resnet50 224x224 on a streamed folder of 256-px JPEGs (2 loader workers), all but the head frozen",
}
EPOCHS = {"a": 10, "b": 10, "c": 3}  # the default --epochs of each case
C_MODEL, C_IMAGES, C_WORKERS = "resnet50", 400, 2


def peak_rss_mb() -> float:
    """This process's peak RSS in MB: VmHWM, the high-water mark of its own memory.

    Not ``getrusage().ru_maxrss``: Linux carries that over fork and exec, so every arm started from this
    bench's parent would report at least the parent's peak (see tests/callbacks/cache_rss_script.py).
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: the best there is


def jpeg_folder(cache_dir: str, n: int = C_IMAGES) -> Path:
    """bench/data.py's folder of ``n`` generated 256-px JPEGs (10 classes), made on first use."""
    spec = importlib.util.spec_from_file_location("bench_data", Path(__file__).with_name("data.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.image_folder(Path(cache_dir).expanduser(), n, n)


def run_arm(case: str, arm: str, epochs: int, cache_dir: str = DEFAULT_CACHE_DIR) -> dict:
    """Fit one arm in this process; per-epoch wall times (fit start -> end of epoch 0, then epoch to epoch)."""
    import timm

    from ltrain.callbacks import FreezeSchedule, FrozenFeatureCache
    from ltrain.callbacks.epoch_seed import EpochSeed
    from ltrain.data import ImageFolderData, MnistEmbedded
    from ltrain.data.base import EpochShuffleSampler
    from ltrain.models import build_mlp
    from ltrain.models.split import eval_mode, split_model
    from ltrain.modules.classifier import ClassifierModule

    torch.manual_seed(0)
    workers = 0
    if case == "a":
        dm = MnistEmbedded(image_size=64, channels=3, batch_size=64)
        model = timm.create_model("resnet18", num_classes=10)
        trainable = "head"
    elif case == "c":
        workers = C_WORKERS
        dm = ImageFolderData(
            str(jpeg_folder(cache_dir)),
            model_name=C_MODEL,
            augment="none",
            num_workers=workers,
            batch_size=64,
            val_fraction=0.25,
            test_fraction=0.03,
        )
        model = timm.create_model(C_MODEL, num_classes=10)
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
            p.requires_grad_(name.startswith("fc") if case in "ac" else name.startswith(("hidden4", "head")))
        probe = torch.stack([dm.splits["val"][i][0] for i in range(4)])
        split = split_model(model, probe)
        loaders = {}
        for s in ("train", "val"):
            ds = dm.splits[s]
            batches = DataLoader(ds, batch_size=64, num_workers=workers)  # the split's images, in order
            with torch.inference_mode(), eval_mode(model):
                feats = torch.cat([split.prefix(x) for x, _ in batches]).clone()
            loaders[s] = TensorDataset(feats, ds.labels)
        model = Top(split.suffix, [m for _, m in split.suffix_modules])
        datamodule = FeatureData(
            loaders["train"], loaders["val"], EpochShuffleSampler(len(loaders["train"]), torch.initial_seed())
        )
    else:
        callbacks.append(FreezeSchedule([{"trainable": trainable}]))
        if arm in ("cached", "disk"):
            callbacks.append(FrozenFeatureCache(storage="memory" if arm == "cached" else "disk"))
    module = ClassifierModule(model, 10, optimizer=lambda ps: torch.optim.Adam(ps, lr=1e-3))
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as run_dir:  # the disk arm's files go here
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
            default_root_dir=run_dir,
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
        "peak_rss_mb": peak_rss_mb(),
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
    parser.add_argument("--epochs", type=int, help="epochs per arm (default: 10 for cases a and b, 3 for c)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--disk", action="store_true", help="case c: also a FrozenFeatureCache(storage='disk') arm")
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, help="where case c's JPEG folder is kept")
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:  # a child process: one arm, JSON on the last line of stdout
        print(json.dumps(run_arm(args.case, args.arm, args.epochs, args.cache_dir)))
        return
    cases = args.cases.split(",")
    if unknown := [c for c in cases if c not in CASES]:
        sys.exit(f"--cases: unknown case(s) {unknown}; choose from {list(CASES)}")
    epochs = {c: args.epochs or EPOCHS[c] for c in cases}
    if "c" in cases:
        jpeg_folder(args.cache_dir)  # generated once, before anything is timed
    runs: dict[tuple[str, str], list[dict]] = {}
    for r in range(args.repeats):
        for c in cases:
            arms = arms_of(c, args.disk)
            for a in arms if r % 2 == 0 else arms[::-1]:  # alternate the order so drift hits every arm alike
                child = ["--arm", a, "--case", c, "--epochs", str(epochs[c]), "--cache-dir", args.cache_dir]
                out = subprocess.run(
                    [sys.executable, __file__, *child],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if out.returncode != 0 and a == "disk":  # the optional arm: report it, go on with the others
                    print(f"{c}/{a} failed (left out of the table):\n{out.stderr[-3000:]}", flush=True)
                    continue
                if out.returncode != 0:
                    sys.exit(f"{c}/{a} failed:\n{out.stderr[-3000:]}")
                res = json.loads(out.stdout.strip().splitlines()[-1])
                runs.setdefault((c, a), []).append(res)
                print(
                    f"repeat {r} case {c} {a:8s}: first {res['epochs'][0]:.2f}s, later median "
                    f"{_seconds(_later(res))} s, fit {res['fit_seconds']:.1f}s, peak RSS {res['peak_rss_mb']:.0f} MB",
                    flush=True,
                )
    print(report(runs, cases, argparse.Namespace(epochs=epochs, repeats=args.repeats)))


def arms_of(case: str, disk: bool) -> tuple[str, ...]:
    return ("uncached", "cached", "disk", "floor") if disk and case == "c" else ARMS


def _later(run: dict) -> float | None:
    """The median of a run's epochs after the first; None with ``--epochs 1`` (there are none)."""
    return statistics.median(run["epochs"][1:]) if len(run["epochs"]) > 1 else None


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _check(value: float, bound: float, at_least: bool) -> str:
    ok = value >= bound if at_least else value <= bound
    return f"{'ok' if ok else 'MISSED'} ({'>=' if at_least else '<='} {bound:g}x)"


def report(runs: dict, cases: list[str], args: argparse.Namespace) -> str:
    """The markdown tables and ratios; ``args.epochs`` is one count or a dict of counts per case."""
    epochs = args.epochs if isinstance(args.epochs, dict) else dict.fromkeys(cases, args.epochs)
    lines = [
        f"# bench/cache.py: {', '.join(f'({c}) {epochs[c]} epochs' for c in cases)}; "
        f"{args.repeats} interleaved repeat(s), medians",
        f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
        f"load average at the end {os.getloadavg()[0]:.1f}",
        "",
    ]
    for c in cases:
        rows = {}
        for a in (a for a in ("uncached", "cached", "disk", "floor") if (c, a) in runs):
            rs = runs[(c, a)]
            rows[a] = {
                "first": statistics.median(r["epochs"][0] for r in rs),
                "later": statistics.median(_later(r) for r in rs) if epochs[c] > 1 else None,
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
        first = k["first"] / u["first"]
        measured = [
            f"- {epochs[c]}-epoch fit measured: uncached / cached = {u['total'] / k['total']:.1f}x",
            f"- cached first epoch (precomputation included) / uncached first epoch = **{first:.2f}x** "
            f"({k['first']:.2f}s vs {u['first']:.2f}s) {_check(first, 1.3, at_least=False)}",
        ]
        if "disk" in rows:
            measured.append(f"- disk cache: first epoch / uncached = {rows['disk']['first'] / u['first']:.2f}x")
        if u["later"] is None:  # --epochs 1: no later epoch to time, nothing to extrapolate from
            lines += ["", "- later epochs: not measured (--epochs 1; use --epochs 2 or more)", *measured, ""]
            continue
        speedup, over_floor = u["later"] / k["later"], k["later"] / f["later"]
        ten = {a: v["first"] + 9 * v["later"] for a, v in rows.items()}  # first epoch + 9 later ones
        lines += [
            "",
            f"- later epochs: uncached / cached = **{speedup:.1f}x** {_check(speedup, 50, at_least=True)}; "
            f"cached / floor = **{over_floor:.2f}x** {_check(over_floor, 1.3, at_least=False)}",
            *measured,
        ]
        if "disk" in rows:
            lines.append(
                f"- disk cache later epochs: uncached / disk = {u['later'] / rows['disk']['later']:.1f}x; "
                f"disk / floor = {rows['disk']['later'] / f['later']:.2f}x"
            )
        lines += [
            f"- 10 epochs (first + 9 x later median): uncached {ten['uncached']:.1f}s, cached "
            f"{ten['cached']:.1f}s, floor {ten['floor']:.1f}s; uncached / cached = "
            f"{ten['uncached'] / ten['cached']:.1f}x",
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
