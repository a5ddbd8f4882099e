"""MC-dropout calibration metrics under real 2-process CPU DDP (gloo) equal one process on the same data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sklearn.datasets import load_digits

from tests.inference.mc_ddp_worker import BATCH, mlp

WORKER = Path(__file__).with_name("mc_ddp_worker.py")
N = 480  # 2 ranks x 6 batches x 40: no padding by the DistributedSampler


def _run(tmp_path: Path, name: str, data: Path, weights: Path, devices: int) -> list[dict]:
    out = tmp_path / name
    out.mkdir()
    done = subprocess.run(
        [sys.executable, str(WORKER), str(weights), str(data), str(out), str(devices)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(WORKER.parents[2])},
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(devices)]


@pytest.mark.ddp
def test_two_process_mc_calibration_error_equals_one_process_on_the_same_data(tmp_path):
    digits = load_digits()
    x = torch.tensor(digits.data[:N], dtype=torch.float32) / 16
    y = torch.tensor(digits.target[:N])
    torch.manual_seed(0)
    net = mlp()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(40):  # a partly trained net: neither random nor perfectly calibrated
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    torch.save({"x": x, "y": y}, tmp_path / "natural.pt")
    # one process sees the batches the two ranks see (rank r's batch b is its batch 2b + r), so it gets the
    # same MC masks (mc.batch_seed); rank r of the DistributedSampler holds inputs r, r + 2, r + 4, ...
    order = [r + 2 * (b * BATCH + j) for b in range(N // (2 * BATCH)) for r in (0, 1) for j in range(BATCH)]
    assert sorted(order) == list(range(N))
    torch.save({"x": x[order], "y": y[order]}, tmp_path / "interleaved.pt")

    (single,) = _run(tmp_path, "single", tmp_path / "interleaved.pt", tmp_path / "weights.pt", 1)
    ranks = _run(tmp_path, "ddp", tmp_path / "natural.pt", tmp_path / "weights.pt", 2)

    assert single["scored"] == N and all(r["scored"] == N for r in ranks)
    for rank in ranks:
        for arm in ("deterministic", "mc_dropout"):
            assert set(rank["results"][arm]) == set(single["results"][arm])
            for k, v in single["results"][arm].items():
                assert rank["results"][arm][k] == pytest.approx(v, abs=1e-6), (arm, k)
    assert single["results"]["mc_dropout"]["mutual_info"] > 0
    # what the callback logged before (a mean of per-rank errors) is not the figure of the test set. (For the
    # MC arm it can be: when every bin is under-confident, |sum(correct - confidence)| is additive over shards.)
    assert [r["shard"]["deterministic"]["count"] for r in ranks] == [N / 2, N / 2]
    mean_of_shards = sum(r["shard"]["deterministic"]["ece"] for r in ranks) / 2
    assert abs(mean_of_shards - single["results"]["deterministic"]["ece"]) > 1e-4
