"""Schedules by name: the LR (and momentum) at chosen steps equals the chapter's formula, and a run killed
mid-epoch and resumed from its checkpoint continues the identical sequence (real Lightning Trainers)."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint

from ltrain.callbacks import ResumePlateauSchedulers
from tests.conftest import compose_config
from tests.tiny_runs import CrashAt, KilledRun, LRRecorder, tiny_module, tiny_trainer


def one_cycle_formula(t: int, total: int, eta1: float, pct: float = 0.45, div: float = 10.0, final_div: float = 1000.0):
    """The book's 1cycle: eta0 -> eta1 linearly, back to eta0, then linearly down to eta0/final_div;
    momentum 0.95 -> 0.85 -> 0.95 then flat. Phase ends as steps: pct*N - 1 and 2*pct*N - 2 (0-based)."""
    eta0 = eta1 / div
    t1, t2, end = pct * total - 1, 2 * pct * total - 2, total - 1
    if t <= t1:
        f = t / t1
        return eta0 + (eta1 - eta0) * f, 0.95 + (0.85 - 0.95) * f
    if t <= t2:
        f = (t - t1) / (t2 - t1)
        return eta1 + (eta0 - eta1) * f, 0.85 + (0.95 - 0.85) * f
    f = (t - t2) / (end - t2)
    return eta0 + (eta0 / final_div - eta0) * f, 0.95


def schedule_at_steps(scheduler_cfg, optimizer: torch.optim.Optimizer, steps: int, total: int):
    """(lr, momentum-or-beta1) before each of ``steps`` optimizer steps of a scheduler built from config."""
    sched = instantiate(scheduler_cfg).build(optimizer, total)["scheduler"]
    out = []
    for _ in range(steps):
        g = optimizer.param_groups[0]
        out.append((g["lr"], g["betas"][0] if "betas" in g else g["momentum"]))
        optimizer.step()
        sched.step()
    return out


def sgd(lr=0.1, momentum=0.9):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr, momentum=momentum)


def test_power_schedule_is_lr0_over_one_plus_t_over_s_to_the_c():
    cfg = compose_config("scheduler=power", "scheduler.scheduler.decay_steps=10", "scheduler.scheduler.power=2")
    seq = schedule_at_steps(cfg.scheduler, sgd(lr=0.1), 31, 100)
    for t in (0, 5, 10, 30):
        assert seq[t][0] == pytest.approx(0.1 / (1 + t / 10) ** 2, rel=1e-12)
    assert seq[10][0] == pytest.approx(0.025)  # lr0 / 2^c after s steps


def test_exponential_schedule_falls_tenfold_every_s_steps():
    cfg = compose_config("scheduler=exponential", "scheduler.scheduler.decay_steps=20")
    seq = schedule_at_steps(cfg.scheduler, sgd(lr=0.1), 41, 100)
    for t in (0, 7, 20, 40):
        assert seq[t][0] == pytest.approx(0.1 * 0.1 ** (t / 20), rel=1e-9)
    assert seq[40][0] == pytest.approx(0.001, rel=1e-9)


def test_piecewise_constant_schedule_uses_the_book_values():
    cfg = compose_config("scheduler=piecewise")  # boundaries [5, 15], factors [1, .5, .1]: 0.01, 0.005, 0.001
    seq = schedule_at_steps(cfg.scheduler, sgd(lr=0.01), 20, 20)
    assert [seq[e][0] for e in (0, 4, 5, 14, 15, 19)] == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.001, 0.001])


def test_plateau_schedule_multiplies_by_lambda_after_patience_stalled_epochs():
    cfg = compose_config("scheduler=plateau", "scheduler.scheduler.patience=2", "scheduler.scheduler.factor=0.1")
    opt = sgd(lr=0.1)
    sched = instantiate(cfg.scheduler).build(opt)["scheduler"]
    lrs = []
    for val_loss in (1.0, 0.9, 0.95, 0.95, 0.95, 0.8, 0.9, 0.9, 0.9):
        sched.step(val_loss)
        lrs.append(opt.param_groups[0]["lr"])
    # 3 epochs without improvement over 0.9 (> patience 2) -> x0.1; an improvement resets the count
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.01, 0.001])


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_one_cycle_goes_eta0_eta1_eta0_then_annihilates_with_momentum_cycling(optimizer):
    cfg = compose_config("scheduler=one_cycle", "scheduler.scheduler.max_lr=0.05", f"optimizer={optimizer}")
    params = [torch.nn.Parameter(torch.zeros(2))]
    seq = schedule_at_steps(cfg.scheduler, instantiate(cfg.optimizer)(params), 100, 100)
    for t in (0, 20, 44, 60, 88, 94, 99):
        lr, mom = one_cycle_formula(t, 100, 0.05)
        assert seq[t][0] == pytest.approx(lr, rel=1e-9, abs=1e-12)
        assert seq[t][1] == pytest.approx(mom, rel=1e-9)
    assert [seq[t][0] for t in (0, 44, 88, 99)] == pytest.approx([0.005, 0.05, 0.005, 0.005 / 1000])
    assert [seq[t][1] for t in (0, 44, 88, 99)] == pytest.approx([0.95, 0.85, 0.95, 0.95])


# (overrides, formula(t, steps_per_epoch) -> (lr, momentum) before optimizer step t)
STEPS_PER_EPOCH, EPOCHS = 5, 4
RESUMABLE = {
    "power": (
        ["scheduler=power", "scheduler.scheduler.decay_steps=3", "optimizer.lr=0.1"],
        lambda t: (0.1 / (1 + t / 3), 0.9),
    ),
    "exponential": (
        ["scheduler=exponential", "scheduler.scheduler.decay_steps=8", "optimizer.lr=0.1"],
        lambda t: (0.1 * 0.1 ** (t / 8), 0.9),
    ),
    "piecewise": (
        ["scheduler=piecewise", "scheduler.scheduler.boundaries=[1,3]", "optimizer.lr=0.1"],
        lambda t: (0.1 * [1.0, 0.5, 0.5, 0.1][t // STEPS_PER_EPOCH], 0.9),
    ),
    # a metric that never improves by 100%: the LR halves every patience+1 = 2 epochs
    "plateau": (
        [
            "scheduler=plateau",
            "scheduler.scheduler.patience=1",
            "+scheduler.scheduler.threshold=1.0",
            "optimizer.lr=0.1",
        ],
        lambda t: (0.1 * 0.5 ** (t // STEPS_PER_EPOCH // 2), 0.9),
    ),
    "one_cycle": (
        ["scheduler=one_cycle", "scheduler.scheduler.max_lr=0.1"],
        lambda t: one_cycle_formula(t, STEPS_PER_EPOCH * EPOCHS, 0.1),
    ),
}


@pytest.mark.parametrize("name", list(RESUMABLE))
def test_schedule_resumed_mid_epoch_from_a_checkpoint_continues_the_identical_sequence(
    name, digits_datamodule, tmp_path
):
    """ResumePlateauSchedulers (in every ltrain Trainer) takes the plateau step Lightning skips on resume."""
    overrides, formula = RESUMABLE[name]
    overrides = ["optimizer=momentum", *overrides]
    crash_step = 7  # in the middle of the second epoch
    first = LRRecorder()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=1)
    module, _ = tiny_module(digits_datamodule, *overrides)
    with pytest.raises(KilledRun):
        tiny_trainer(
            tmp_path,
            first,
            CrashAt(crash_step),
            ckpt,
            ResumePlateauSchedulers(),
            max_epochs=EPOCHS,
            limit_train_batches=STEPS_PER_EPOCH,
            limit_val_batches=1,
            enable_checkpointing=True,
        ).fit(module, datamodule=digits_datamodule)
    second = LRRecorder()
    module, _ = tiny_module(
        digits_datamodule, *overrides, seed=1
    )  # different fresh weights: the checkpoint must restore all
    tiny_trainer(
        tmp_path,
        second,
        ResumePlateauSchedulers(),
        max_epochs=EPOCHS,
        limit_train_batches=STEPS_PER_EPOCH,
        limit_val_batches=1,
        enable_checkpointing=True,
    ).fit(module, datamodule=digits_datamodule, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))

    rows = first.rows + second.rows
    assert [r[0] for r in rows] == list(range(STEPS_PER_EPOCH * EPOCHS))  # each step exactly once
    assert second.rows[0][0] == crash_step
    for step, (lr,), (mom,) in rows:
        want_lr, want_mom = formula(step)
        assert lr == pytest.approx(want_lr, rel=1e-9), f"{name}: lr at step {step}"
        assert mom == pytest.approx(want_mom, rel=1e-9), f"{name}: momentum at step {step}"
    assert not math.isclose(rows[0][1][0], rows[-1][1][0])  # the schedule really moved
