"""Run by test_cache_mmap.py: one cached fit, in its own process so that its peak RSS is its own.

A frozen ``Linear(16, WIDTH)`` + ReLU trunk whose output is far bigger than its input (20,000 examples x
8,192 floats = 625 MiB of features from 1.2 MiB of inputs), and a trainable ``Linear(WIDTH, 10)`` head.
Writes ``result.json`` (RSS before the fit, peak RSS after it, in MiB; the feature bytes) and ``weights.pt``.

Usage: python cache_rss_script.py OUT_DIR memory|disk [EXAMPLES WIDTH]
"""

import json
import resource
import sys
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
from ltrain.callbacks import FrozenFeatureCache
from ltrain.modules.classifier import ClassifierModule


def peak_rss_mib() -> float:
    """This process's peak RSS: VmHWM, the high-water mark of its own memory map.

    Not ``getrusage().ru_maxrss``: Linux carries that over ``exec`` from the process that forked it, so a
    child of a pytest holding 1.1 GiB starts with a 1.1 GiB "peak" that hides its own.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main(out: Path, storage: str, examples: int = 20_000, width: int = 8192) -> None:
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(examples, 16, generator=gen)
    y = (x @ torch.randn(16, 10, generator=gen)).argmax(1)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, width), nn.ReLU(), nn.Linear(width, 10))
    net[0].requires_grad_(False)  # the frozen trunk: its output (after the ReLU) is what gets cached
    module = ClassifierModule(net, 10, optimizer=lambda ps: torch.optim.SGD(ps, lr=0.05))
    train = DataLoader(TensorDataset(x, y), batch_size=250, shuffle=True)
    cache = FrozenFeatureCache(storage=storage, directory=str(out / "cache"), max_gb=8.0)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        callbacks=[cache],
    )
    before = peak_rss_mib()  # everything but the features: interpreter, torch, Lightning, data, model
    trainer.fit(module, train)
    peak = peak_rss_mib()
    torch.save(net.state_dict(), out / "weights.pt")
    result = {
        "rss_before_fit_mib": before,
        "peak_rss_mib": peak,
        "feature_mib": cache.cached["train"].nbytes / 2**20,
        "sources": cache.sources,
        "steps": trainer.global_step,
    }
    (out / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    args = sys.argv[1:]
    main(Path(args[0]), args[1], *(int(a) for a in args[2:4]))
