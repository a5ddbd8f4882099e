"""MaxNorm is idempotent: a run killed after a freeze-phase change and resumed ends bit-identical."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from killpoint import (
    env_with_killpoint,
    sigkill_then_resume,
    spawn,
    tail,
)

from ltrain.callbacks.max_norm import apply_max_norm

BIN = Path(sys.executable).parent
RUN = [
    "model.hidden=[64,64]",
    "model.dropout=0.2",
    "trainer.limit_train_batches=15",
    "callbacks=none",
    "trainer.max_epochs=4",
    "trainer.enable_progress_bar=false",
    "freeze=default",
    "freeze.phases=[{trainable: head}, {at_epoch: 2, trainable: 'top:2', lr_scale: 0.1}]",
    "+callbacks.max_norm._target_=ltrain.callbacks.MaxNorm",
    "+callbacks.max_norm.max_norm=1.0",
]
KILL_STEP = 38  # epoch 2 (after the phase change), batch_idx 7 of 15


def _ltrain(run_dir: Path, *args: str) -> subprocess.Popen:
    return spawn([str(BIN / "ltrain"), *RUN, f"hydra.run.dir={run_dir}", *args], env=env_with_killpoint())


def test_applying_max_norm_twice_changes_no_bit():
    torch.manual_seed(0)
    layer = torch.nn.Linear(50, 20)
    with torch.no_grad():
        layer.weight.mul_(3.0)
    apply_max_norm(layer, 1.0)
    once = layer.weight.clone()
    version = layer.weight._version
    apply_max_norm(layer, 1.0)
    assert torch.equal(layer.weight, once) and layer.weight._version == version  # not even rewritten
    frozen = torch.nn.Linear(50, 20).requires_grad_(False)
    before = frozen.weight.clone() * 1
    with torch.no_grad():
        frozen.weight.mul_(3.0)
    apply_max_norm(frozen, 1.0)
    assert torch.equal(frozen.weight, before * 3.0)  # a frozen weight is never touched


def test_sigkill_after_the_phase_change_then_resume_with_max_norm_is_bit_identical(tmp_path, kill_report):
    reference = _ltrain(tmp_path / "reference")
    kill_report(sigkill_then_resume([str(BIN / "ltrain"), *RUN], tmp_path / "victim", KILL_STEP, tmp_path / "markers"))
    assert reference.wait(timeout=600) == 0, tail(reference)
    a = torch.load(tmp_path / "reference" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(tmp_path / "victim" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"] == 60
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    norms = {k: v.norm(dim=1).max().item() for k, v in a["state_dict"].items() if k.endswith("weight") and v.dim() == 2}
    frozen = [k for k in norms if "hidden0" in k]  # below top:2 in every phase
    assert frozen and all(norms[k] > 1.0 for k in frozen), norms  # pretrained/frozen: never rescaled
    assert all(n <= 1.0 + 1e-5 for k, n in norms.items() if k not in frozen), norms
