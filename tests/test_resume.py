"""Kill-and-resume: a run resumed from its last checkpoint ends with the weights of an uninterrupted run."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from killpoint import assert_landed, env_with_killpoint, kill, pause_overrides, wait_for_markers

from ltrain.train import train

BIN = Path(sys.executable).parent
SMALL = ["model.hidden=[64,64]", "model.dropout=0.2", "trainer.limit_train_batches=15", "callbacks=none"]


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


SCHEDULES = {
    "none": [],
    # val/loss never improves by 100%: the LR halves after every epoch, a step Lightning skips on resume
    "plateau": ["scheduler=plateau", "scheduler.scheduler.patience=0", "+scheduler.scheduler.threshold=1.0"],
    "one_cycle": ["scheduler=one_cycle", "scheduler.scheduler.total_steps=45"],  # 3 epochs x 15 batches, fixed
}


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_resuming_from_a_checkpoint_gives_the_uninterrupted_weights(cfg_factory, tmp_path, schedule):
    aug = [*SMALL, "data.augment=flip_crop", *SCHEDULES[schedule]]  # dropout and augmentation draw random numbers
    full = train(cfg_factory(*aug, "trainer.max_epochs=3", "test=false"), tmp_path / "full")
    part = train(cfg_factory(*aug, "trainer.max_epochs=2", "test=false"), tmp_path / "part")
    resumed = train(
        cfg_factory(
            *aug, "trainer.max_epochs=3", "test=false", f"resume={tmp_path / 'part' / 'checkpoints' / 'last.ckpt'}"
        ),
        tmp_path / "resumed",
    )
    assert part["global_step"] < full["global_step"] == resumed["global_step"]
    lr = [r["trainer"].optimizers[0].param_groups[0]["lr"] for r in (full, resumed)]
    assert lr[0] == lr[1], lr
    a, b = full["module"].state_dict(), resumed["module"].state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# head only, then the top two groups at a tenth of the rate from epoch 2; the LR also halves at every epoch end
IN_EFFECT = [
    *SMALL,
    "trainer.max_epochs=4",
    "trainer.enable_progress_bar=false",
    "freeze=default",
    "freeze.phases=[{trainable: head}, {at_epoch: 2, trainable: 'top:2', lr_scale: 0.1}]",
    *SCHEDULES["plateau"],
]


def _ltrain(run_dir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "ltrain"), *IN_EFFECT, f"hydra.run.dir={run_dir}", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=env_with_killpoint(),
    )


KILL_STEP = 38  # epoch 2, batch_idx 7 of 15: after the phase change and two plateau cuts, mid-epoch


def test_sigkill_mid_epoch_after_a_phase_change_then_resume_auto_matches_an_uninterrupted_run(tmp_path, kill_report):
    reference = _ltrain(tmp_path / "reference")
    victim = _ltrain(tmp_path / "victim", *pause_overrides(KILL_STEP, tmp_path / "markers"))
    markers = wait_for_markers(victim, tmp_path / "markers")
    kill(victim, signal.SIGKILL)
    last = tmp_path / "victim" / "checkpoints" / "last.ckpt"
    kill_report(assert_landed(markers, KILL_STEP, tmp_path / "victim", checkpoint=True))
    resumed = subprocess.run(
        [str(BIN / "ltrain"), *IN_EFFECT, f"hydra.run.dir={tmp_path / 'victim'}", "resume=auto"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert reference.wait(timeout=600) == 0, reference.stderr.read()[-2000:]
    a = _weights(tmp_path / "reference" / "checkpoints" / "last.ckpt")
    b = _weights(last)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rates = [
        [g["lr"] for g in torch.load(c, map_location="cpu", weights_only=True)["optimizer_states"][0]["param_groups"]]
        for c in (tmp_path / "reference" / "checkpoints" / "last.ckpt", last)
    ]
    assert rates[0] == rates[1] and len(set(rates[0])) > 1, rates  # phase rates and plateau cuts, as uninterrupted
