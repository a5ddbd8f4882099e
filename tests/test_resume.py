"""Kill-and-resume: a run resumed from its last checkpoint ends with the weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from killpoint import (
    assert_landed,
    env_with_killpoint,
    kill,
    pause_overrides,
    sigkill_then_resume,
    spawn,
    tail,
    wait_for_markers,
)
from omegaconf import OmegaConf

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
    assert part.results["global_step"] < full.results["global_step"] == resumed.results["global_step"]
    lr = [r.trainer.optimizers[0].param_groups[0]["lr"] for r in (full, resumed)]
    assert lr[0] == lr[1], lr
    a, b = full.module.state_dict(), resumed.module.state_dict()
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
    return spawn([str(BIN / "ltrain"), *IN_EFFECT, f"hydra.run.dir={run_dir}", *args], env=env_with_killpoint())


KILL_STEP = 38  # epoch 2, batch_idx 7 of 15: after the phase change and two plateau cuts, mid-epoch


def test_sigkill_mid_epoch_after_a_phase_change_then_resume_auto_matches_an_uninterrupted_run(tmp_path, kill_report):
    reference = _ltrain(tmp_path / "reference")
    argv = [str(BIN / "ltrain"), *IN_EFFECT]
    kill_report(sigkill_then_resume(argv, tmp_path / "victim", KILL_STEP, tmp_path / "markers"))
    last = tmp_path / "victim" / "checkpoints" / "last.ckpt"
    assert reference.wait(timeout=600) == 0, tail(reference)
    a = _weights(tmp_path / "reference" / "checkpoints" / "last.ckpt")
    b = _weights(last)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rates = [
        [g["lr"] for g in torch.load(c, map_location="cpu", weights_only=True)["optimizer_states"][0]["param_groups"]]
        for c in (tmp_path / "reference" / "checkpoints" / "last.ckpt", last)
    ]
    assert rates[0] == rates[1] and len(set(rates[0])) > 1, rates  # phase rates and plateau cuts, as uninterrupted


# ---- a run's files are written once: history across resumes, finished runs, mismatched configs ----
HISTORY = [
    "model.hidden=[16]",
    "trainer.max_epochs=4",
    "trainer.limit_train_batches=5",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "callbacks=none",
]


def _history_run(run_dir: Path, *args: str, env=None) -> subprocess.Popen:
    return spawn([str(BIN / "ltrain"), *HISTORY, f"hydra.run.dir={run_dir}", *args], env=env or env_with_killpoint())


def _epochs_of(csv_path: Path, column: str) -> list[int]:
    import csv

    with open(csv_path, newline="") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f) if r.get(column)]


def _ctrl_c_then_resume(tmp_path: Path, kill_step: int) -> tuple[Path, str]:
    run = tmp_path / "run"
    victim = _history_run(run, *pause_overrides(kill_step, tmp_path / "markers"))
    markers = wait_for_markers(victim, tmp_path / "markers")
    assert kill(victim, signal.SIGINT) != 0  # Lightning's graceful shutdown exits 1
    where = assert_landed(markers, kill_step, run)
    resumed = subprocess.run(
        [str(BIN / "ltrain"), *HISTORY, f"hydra.run.dir={run}", "resume=auto"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    return run, where


@pytest.mark.parametrize("kill_step", [8, 14])  # mid epoch 1 and mid epoch 2 of 4 x 5 batches: fixed, not random,
def test_ctrl_c_mid_run_then_resume_auto_keeps_every_epoch_exactly_once(tmp_path, kill_report, kill_step):
    """(Chosen steps, so a failure reproduces; epoch 0 before any checkpoint is the next test.)"""
    from ltrain.plots import read_metrics

    run, where = _ctrl_c_then_resume(tmp_path, kill_step)
    kill_report(where)
    metrics = run / "logs" / "metrics.csv"
    assert _epochs_of(metrics, "val/acc") == [0, 1, 2, 3]
    assert _epochs_of(metrics, "train/loss_epoch") == [0, 1, 2, 3]
    steps = [int(s) for s in _steps_of(metrics)]
    assert steps == sorted(set(steps)) and len(steps) == 20, steps  # every optimizer step once, in order
    curves = read_metrics(metrics)
    assert [e for e, _ in curves["val/acc"]] == [0, 1, 2, 3]
    assert (run / "learning_curves.png").stat().st_size > 1000


def _steps_of(csv_path: Path) -> list[str]:
    import csv

    with open(csv_path, newline="") as f:
        return [r["step"] for r in csv.DictReader(f) if r.get("train/loss_step")]


def test_ctrl_c_before_the_first_checkpoint_keeps_the_old_log_rows_aside(tmp_path):
    run, _ = _ctrl_c_then_resume(tmp_path, 3)  # epoch 0: no checkpoint yet, so resume=auto starts over
    (dropped,) = (run / "logs").glob("dropped-*.csv")
    assert len(_steps_of(dropped)) >= 2  # the interrupted attempt's step rows are kept, not deleted
    assert _epochs_of(run / "logs" / "metrics.csv", "val/acc") == [0, 1, 2, 3]


def _unchanged(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_resume_auto_never_reopens_a_finished_run(cfg_factory, tmp_path):
    from ltrain.errors import LtrainError

    run = tmp_path / "runs" / "first"  # under $LTRAIN_RUNS, where resume=auto looks
    train(cfg_factory(*SMALL, "trainer.max_epochs=1"), run)
    before = _unchanged(run)
    with pytest.raises(LtrainError, match="holds a finished run"):  # its own directory: refused
        train(cfg_factory(*SMALL, "trainer.max_epochs=1", "resume=auto"), run)
    with pytest.warns(UserWarning, match="has finished"):  # found by its config: said, and a new run starts
        again = train(cfg_factory(*SMALL, "trainer.max_epochs=1", "resume=auto"), tmp_path / "runs" / "second")
    assert again.results["run_dir"] == str(tmp_path / "runs" / "second") and again.results["resumed_from"] is None
    assert _unchanged(run) == before


def _unfinished_run(cfg_factory, run: Path) -> dict[str, bytes]:
    """A real run whose test phase never ended (no results.json), as a kill during testing leaves it."""
    train(cfg_factory(*SMALL, "trainer.max_epochs=1"), run)
    (run / "results.json").unlink()
    return _unchanged(run)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("model.hidden=[32,32]", "model.hidden"),
        ("data.classes=[0,1,2,3,4]", "data.classes"),
        ("seed=1", "seed"),
        ("optimizer.lr=0.1", "optimizer.lr"),  # Lightning would restore the old rate and ignore this one
        ("l2=0.001", "l2"),
        ("freeze=head_only", "freeze"),
    ],
)
def test_resuming_a_run_with_another_model_data_or_seed_is_refused_before_anything_is_written(
    cfg_factory, tmp_path, override, named
):
    from ltrain.errors import LtrainError

    run = tmp_path / "run"
    before = _unfinished_run(cfg_factory, run)
    with pytest.raises(LtrainError, match=rf"holds another run(.|\n)*{named}"):
        train(cfg_factory(*SMALL, "trainer.max_epochs=1", "resume=auto", override), run)
    assert _unchanged(run) == before


def test_a_new_run_into_a_directory_that_holds_one_is_refused(cfg_factory, tmp_path):
    from ltrain.errors import LtrainError

    run = tmp_path / "run"
    before = _unfinished_run(cfg_factory, run)
    with pytest.raises(LtrainError, match="already holds a run"):
        train(cfg_factory(*SMALL, "trainer.max_epochs=1"), run)
    assert _unchanged(run) == before


def test_cli_refusal_leaves_the_runs_hydra_record_untouched(tmp_path):
    run = tmp_path / "run"
    first = _history_run(run, "trainer.max_epochs=1", env=dict(os.environ))
    assert first.wait(timeout=600) == 0, tail(first)
    assert (run / ".hydra" / "config.yaml").is_file()
    (run / "results.json").unlink()  # as if killed while testing
    before = _unchanged(run)
    out = subprocess.run(
        [str(BIN / "ltrain"), *HISTORY[1:], "model.hidden=[32,32]", f"hydra.run.dir={run}", "resume=auto"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 2 and "holds another run" in out.stderr and "Traceback" not in out.stderr, out.stderr
    after = _unchanged(run)
    after.pop("ltrain.log", None), before.pop("ltrain.log", None)  # Hydra's job log is appended to
    assert after == before


def test_two_ltrain_processes_started_together_write_two_run_directories(tmp_path):
    from ltrain.paths import conf_dir

    assert "${ltrain.unique:}" in (conf_dir() / "hydra" / "default.yaml").read_text()  # pid + random after the time
    env = {**os.environ, "LTRAIN_RUNS": str(tmp_path / "runs")}
    args = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "test=false", "plots=false"]
    procs = [_plain_ltrain(env, *args, f"seed={s}") for s in (0, 1)]
    for p in procs:
        assert p.wait(timeout=600) == 0, tail(p)
    configs = sorted((tmp_path / "runs").glob("*/*/config.yaml"))
    assert len(configs) == 2, configs
    for c in configs:
        seed = OmegaConf.load(c).seed
        assert json.loads((c.parent / "results.json").read_text())["seed"] == seed


def _plain_ltrain(env, *args: str) -> subprocess.Popen:
    return spawn([str(BIN / "ltrain"), "trainer.enable_progress_bar=false", *args], env=env, new_session=False)
