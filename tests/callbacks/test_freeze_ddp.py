"""FreezeSchedule under real DDP: 2 CPU processes (gloo), parameters unfrozen mid-run stay in sync."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("ddp_freeze_script.py")


@pytest.mark.ddp
def test_parameters_unfrozen_mid_run_are_identical_on_both_ranks(tmp_path):
    """The trap of Lightning issue 20340: parameters frozen when DDP wraps the model are never all-reduced."""
    run = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True, timeout=600, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    start = torch.load(tmp_path / "start0.pt", weights_only=True)
    end0, end1 = (torch.load(tmp_path / f"end{r}.pt", weights_only=True) for r in (0, 1))
    assert end0.keys() == end1.keys() and len(end0) == 32  # 17 parameters + 15 BN buffers
    for name in end0:
        assert torch.equal(end0[name], end1[name]), name
    body = [n for n in start if n.startswith("hidden") and not n.endswith("num_batches_tracked")]
    assert all(not torch.equal(start[n], end0[n]) for n in body)  # frozen in epoch 0, trained in epochs 1-2
    rates = {r: [torch.load(tmp_path / f"rates{r}_epoch{e}.pt", weights_only=True) for e in range(3)] for r in (0, 1)}
    assert rates[0] == rates[1]
    assert rates[0][0] == {**{f"hidden{i}": 0.0 for i in range(5)}, "head": 0.05}
    assert set(rates[0][2].values()) == {0.05 * 0.5}
