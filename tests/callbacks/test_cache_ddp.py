"""FrozenFeatureCache under real 2-process CPU DDP (gloo): it trains, and each rank caches only its own shard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

BIN = Path(sys.executable).parent


@pytest.mark.ddp
def test_ddp_run_trains_from_the_cache_and_each_rank_holds_only_its_shard(tmp_path):
    runs = tmp_path / "runs"
    args = [
        "trainer=ddp_cpu",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        "callbacks=none",
        "freeze=head_only",
        "cache=disk",
        "cache.reuse=false",
        "data.train_per_class=20",
        "data.batch_size=16",
        "test=false",
        "plots=false",
    ]
    done = subprocess.run(
        [str(BIN / "ltrain"), *args],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "LTRAIN_RUNS": str(runs)},
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (results,) = [json.loads(p.read_text()) for p in runs.rglob("results.json")]
    assert results["epochs"] == 2 and results["global_step"] == 2 * 7  # 200 examples / 2 ranks / 16 per batch

    shards = {}
    for path in runs.rglob("train-rank*of2.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            shards[path.name] = (f.get_tensor("indices").tolist(), f.get_tensor("features").shape)
    assert sorted(shards) == ["train-rank0of2.safetensors", "train-rank1of2.safetensors"]
    (rank0, shape0), (rank1, shape1) = shards["train-rank0of2.safetensors"], shards["train-rank1of2.safetensors"]
    assert len(rank0) == len(rank1) == 100 and shape0[:2] == (1, 100) and shape1[:2] == (1, 100)
    assert not set(rank0) & set(rank1) and set(rank0) | set(rank1) == set(range(200))
    assert len(list(runs.rglob("val-rank*of2.safetensors"))) == 2
