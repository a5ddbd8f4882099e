"""The main job under real 2-process CPU DDP (gloo): one run directory, same accuracy as one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from killpoint import assert_landed, env_with_killpoint, kill, pause_overrides, spawn, tail, wait_for_markers

from ltrain.runs import from_run

BIN = Path(sys.executable).parent
COMMON = ["trainer.max_epochs=3", "trainer.enable_progress_bar=false", "callbacks=none"]


def _ltrain(runs: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ltrain"), *COMMON, *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "LTRAIN_RUNS": str(runs)},
        cwd=runs.parent,
        check=False,
    )


@pytest.mark.ddp
def test_ddp_cpu_writes_one_run_directory_and_matches_one_process(tmp_path):
    ddp = _ltrain(tmp_path / "ddp", "trainer=ddp_cpu", "data.batch_size=32")  # 2 x 32 = the 1-process batch of 64
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    run_dirs = [p.parent for p in (tmp_path / "ddp").rglob("config.yaml") if p.parent.name != ".hydra"]
    assert len(run_dirs) == 1, run_dirs
    results = json.loads((run_dirs[0] / "results.json").read_text())

    single = _ltrain(tmp_path / "single", "data.batch_size=64")
    assert single.returncode == 0, single.stderr[-3000:]
    (single_results,) = [json.loads(p.read_text()) for p in (tmp_path / "single").rglob("results.json")]
    assert abs(results["test_acc"] - single_results["test_acc"]) <= 0.01, (
        results["test_acc"],
        single_results["test_acc"],
    )

    module, dm, _ = from_run(run_dirs[0])
    (metrics,) = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False).test(
        module, datamodule=dm, verbose=False
    )
    assert metrics["test/acc"] == pytest.approx(results["test_acc"], abs=1e-6)


KILL_STEP = 27  # epoch 1, batch_idx 6 of 20: after the phase change at epoch 1, mid-epoch


@pytest.mark.ddp
def test_ddp_cpu_run_killed_in_a_freeze_schedule_resumes_auto_to_the_uninterrupted_weights(tmp_path, kill_report):
    """SIGKILL both ranks mid-epoch after the phase change; ``resume=auto`` under DDP ends bit-identical."""
    args = [
        *COMMON,
        "trainer=ddp_cpu",
        "data.batch_size=32",
        "model.hidden=[64,64]",
        "trainer.limit_train_batches=20",
        "test=false",
        "freeze=default",
        "freeze.phases=[{trainable: head}, {at_epoch: 1, trainable: all, lr_scale: 0.5}]",
    ]

    def ltrain(run_dir: Path, *more: str) -> subprocess.Popen:
        return spawn([str(BIN / "ltrain"), *args, f"hydra.run.dir={run_dir}", *more], env=env_with_killpoint())

    victim = ltrain(tmp_path / "victim", *pause_overrides(KILL_STEP, tmp_path / "markers"))
    markers = wait_for_markers(victim, tmp_path / "markers", ranks=2)  # both ranks wait at the step
    kill(victim, signal.SIGKILL)
    kill_report(assert_landed(markers, KILL_STEP, tmp_path / "victim", checkpoint=True))
    resumed = ltrain(tmp_path / "victim", "resume=auto")
    assert resumed.wait(timeout=600) == 0, tail(resumed)
    reference = ltrain(tmp_path / "reference")
    assert reference.wait(timeout=600) == 0, tail(reference)
    runs = [d for d in (tmp_path / "victim").iterdir() if (d / "config.yaml").exists()] + [tmp_path / "victim"]
    assert [d for d in runs if (d / "results.json").exists()] == [tmp_path / "victim"]  # still one run directory
    a, b = (
        torch.load(d / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        for d in (tmp_path / "reference", tmp_path / "victim")
    )
    assert a["epoch"] == b["epoch"] == 2
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
