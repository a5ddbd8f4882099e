"""The main job under real 2-process CPU DDP (gloo): one run directory, same accuracy as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest

from ltrain.runs import from_run

BIN = Path(sys.executable).parent
COMMON = ["trainer.max_epochs=3", "trainer.enable_progress_bar=false", "callbacks=none"]


def _ltrain(runs: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ltrain"), *COMMON, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "LTRAIN_RUNS": str(runs)}, cwd=runs.parent)


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
    assert abs(results["test_acc"] - single_results["test_acc"]) <= 0.01, (results["test_acc"], single_results["test_acc"])

    module, dm, _ = from_run(run_dirs[0])
    (metrics,) = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False).test(module, datamodule=dm,
                                                                                            verbose=False)
    assert metrics["test/acc"] == pytest.approx(results["test_acc"], abs=1e-6)
