"""The disk feature cache survives a SIGKILL: ``resume=auto`` reads the file back and ends bit-identical.

A reference run (its own cache, never interrupted) and a victim killed mid-epoch 1 after its features were
written, then resumed: the resumed run finds the file under the same key, checks its sha256, reads batches
from it, and lands on the reference's weights exactly.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from killpoint import env_with_killpoint, sigkill_then_resume, spawn, tail

BIN = Path(sys.executable).parent
RUN = [
    "model.hidden=[64,64]",
    "model.dropout=0.2",
    "model.dropout_layers=1",  # in the top hidden layer, which trains: above the cut
    "trainer.limit_train_batches=15",
    "callbacks=none",
    "trainer.max_epochs=3",
    "trainer.enable_progress_bar=false",
    "freeze=head_only",
    "freeze.phases=[{trainable: 'top:2'}]",
    "cache=disk",
    "test=false",
    "plots=false",
]
KILL_STEP = 22  # epoch 1, batch_idx 6 of 15: after the epoch-0 checkpoint


@pytest.mark.slow  # two ltrain runs and a resume: ~33 s on 2 cores
def test_sigkill_then_resume_reads_the_disk_cache_back_and_ends_bit_identical(tmp_path, kill_report):
    reference = spawn(
        [str(BIN / "ltrain"), *RUN, "cache.reuse=false", f"hydra.run.dir={tmp_path / 'reference'}"],
        env=env_with_killpoint(),
    )
    kill_report(sigkill_then_resume([str(BIN / "ltrain"), *RUN], tmp_path / "victim", KILL_STEP, tmp_path / "markers"))
    assert reference.wait(timeout=600) == 0, tail(reference)
    a = torch.load(tmp_path / "reference" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(tmp_path / "victim" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"] == 45
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    log = (tmp_path / "victim" / "train.log").read_text()  # both attempts append to it
    assert log.count("FrozenFeatureCache: caching the output of") == 2, log[-3000:]
    assert "FrozenFeatureCache: train features read from" in log  # the resumed attempt read the file back
    (victim_file,) = (Path(os.environ["LTRAIN_CACHE"]) / "features").rglob("train-rank0of1.safetensors")
    assert f"train features read from {victim_file}" in log
