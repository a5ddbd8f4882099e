"""storage=disk: features written batch by batch and read through the file, never held whole in memory.

The acceptance test runs a disk cache whose features (625 MiB) are 4x the memory it is allowed above its
own baseline (the same process's peak RSS before the fit: interpreter, torch, Lightning, data and model),
each arm in its own process (cache_rss_script.py), and compares its trained weights with the in-memory
cache's, bit for bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from safetensors import safe_open
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ltrain.callbacks import FrozenFeatureCache
from ltrain.callbacks.cache_data import load_features
from ltrain.errors import LtrainError
from ltrain.modules.classifier import ClassifierModule
from tests.tiny_runs import quiet_trainer

SCRIPT = Path(__file__).resolve().parent / "cache_rss_script.py"


def _run_script(out: Path, storage: str) -> dict:
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), storage],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


@pytest.mark.slow  # two 15-20 s fits of 20,000 examples x 8,192 features
def test_disk_cache_four_times_the_memory_limit_trains_within_it_to_the_same_weights(tmp_path):
    disk = _run_script(tmp_path / "disk", "disk")
    memory = _run_script(tmp_path / "memory", "memory")
    features = disk["feature_mib"]
    assert features == memory["feature_mib"] == 20_000 * 8192 * 4 / 2**20  # 625 MiB
    limit = features / 4  # MiB above the process's own RSS before the fit
    assert disk["peak_rss_mib"] - disk["rss_before_fit_mib"] < limit, disk  # measured: +71 MiB
    assert memory["peak_rss_mib"] - memory["rss_before_fit_mib"] > features, memory  # the in-memory arm holds them
    assert disk["steps"] == memory["steps"] == 160 and disk["sources"] == {"train": "computed"}
    on_disk, in_memory = torch.load(tmp_path / "disk" / "weights.pt"), torch.load(tmp_path / "memory" / "weights.pt")
    assert on_disk.keys() == in_memory.keys()
    for name, value in in_memory.items():
        assert torch.equal(on_disk[name], value), name


def _fit(
    storage: str, tmp_path: Path, reuse: bool = False, workers: int = 0
) -> tuple[FrozenFeatureCache, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 8, generator=gen)
    y = (x[:, :3]).argmax(1)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 3))
    net[0].requires_grad_(False)
    module = ClassifierModule(net, 3, optimizer=lambda ps: torch.optim.SGD(ps, lr=0.1))
    cache = FrozenFeatureCache(storage=storage, directory=str(tmp_path / "cache"), reuse=reuse)
    trainer = quiet_trainer(
        max_epochs=2,
        callbacks=[cache],
    )
    trainer.fit(
        module,
        DataLoader(TensorDataset(x[:240], y[:240]), batch_size=32, shuffle=True, num_workers=workers),
        DataLoader(TensorDataset(x[240:], y[240:]), batch_size=25, num_workers=workers),
    )
    return cache, net.state_dict()


def test_mapped_disk_cache_trains_to_the_same_weights_as_the_memory_cache(tmp_path):
    memory, expected = _fit("memory", tmp_path)
    disk, got = _fit("disk", tmp_path)
    assert memory.cached["train"].mapped is None and disk.cached["train"].mapped is not None
    for name, value in expected.items():
        assert torch.equal(got[name], value), name
    reused, again = _fit("disk", tmp_path, reuse=True)  # read back from the file a run wrote
    assert reused.sources == {s: str(disk.files[s]) for s in ("train", "val")}
    for name, value in expected.items():
        assert torch.equal(again[name], value), name
    _, with_workers = _fit("disk", tmp_path / "workers", workers=2)  # precomputed and read in worker processes
    for name, value in expected.items():
        assert torch.equal(with_workers[name], value), name


def test_the_cache_file_is_a_safetensors_file_whose_features_match_the_mapped_ones(tmp_path):
    cache, _ = _fit("disk", tmp_path)
    path, cached = cache.files["train"], cache.cached["train"]
    with safe_open(str(path), framework="pt") as f:
        assert torch.equal(f.get_tensor("indices"), torch.arange(240))
        features = f.get_tensor("features")
    assert features.shape == (1, 240, 64)
    assert torch.equal(features, cached.features)
    rows = torch.tensor([7, 3, 200, 4, 5, 6])  # unsorted, with a run of neighbours: read in runs, served in order
    torch.testing.assert_close(cached.gather(0, rows), features[0, rows], rtol=0, atol=0)
    reread = load_features(path, path.parent.name.ljust(64, "?"), torch.arange(240))
    assert reread is None  # another key: a miss, never a read of someone else's features


class TruncateAtEpochEnd(L.Callback):
    """Cuts the train cache file in half after epoch 0: another process truncating it under a running fit."""

    def __init__(self, cache: FrozenFeatureCache):
        self.cache = cache

    def on_train_epoch_end(self, trainer, pl_module):
        path = self.cache.files["train"]
        os.truncate(path, path.stat().st_size // 2)


def test_a_cache_file_cut_short_under_a_running_fit_is_named_not_read_as_zeros(tmp_path):
    x, y = torch.randn(200, 8, generator=torch.Generator().manual_seed(0)), torch.arange(200) % 3
    net = nn.Sequential(nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 3))
    net[0].requires_grad_(False)
    cache = FrozenFeatureCache(storage="disk", directory=str(tmp_path))
    trainer = quiet_trainer(
        max_epochs=2,
        callbacks=[cache, TruncateAtEpochEnd(cache)],
    )
    module = ClassifierModule(net, 3, optimizer=lambda ps: torch.optim.SGD(ps, lr=0.1))
    loader = DataLoader(TensorDataset(x, y), batch_size=50, shuffle=True)
    with pytest.raises(LtrainError, match=r"cache file .*train-rank0of1.safetensors was cut short while this run read"):
        trainer.fit(module, loader)
    assert trainer.current_epoch == 1 and trainer.global_step == 4


def test_a_temporary_file_of_a_killed_precomputation_is_removed_by_the_next_writer_and_no_other(tmp_path):
    import socket

    from ltrain.callbacks.cache_file import FeatureWriter

    target = tmp_path / "key" / "train-rank0of1.safetensors"
    target.parent.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its pid no longer runs (pid reuse within this test: the orphan would merely be kept)
    host = socket.gethostname()
    orphan = target.parent / f".{target.name}.{host}-{gone.pid}.abc123.tmp"
    live = target.parent / f".{target.name}.{host}-{os.getpid()}.def456.tmp"  # a writer that is still running
    remote = target.parent / f".{target.name}.otherhost-{gone.pid}.ghi789.tmp"  # on a shared file system
    for path in (orphan, live, remote):
        path.write_bytes(b"half-written features")
    writer = FeatureWriter(target, "key", (2, 3), torch.float32, torch.arange(2))
    writer.write(torch.ones(2, 3))
    writer.finish(torch.zeros(2, dtype=torch.long), {})
    assert not orphan.exists() and live.exists() and remote.exists() and target.is_file()
