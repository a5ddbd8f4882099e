"""``freeze=<option>`` in the ltrain app: every option instantiates, the default runs inside train(), bad specs fail early."""

from __future__ import annotations

from pathlib import Path

import pytest

from ltrain.callbacks import FreezeSchedule
from ltrain.cli.groups import describe_groups
from ltrain.errors import LtrainError
from ltrain.paths import conf_dir
from ltrain.train import build_callbacks, train

OPTIONS = sorted(p.stem for p in (Path(conf_dir()) / "freeze").glob("*.yaml"))
SMALL = [
    "data.classes=[0,1,2]",
    "data.train_per_class=20",
    "data.batch_size=20",
    "trainer.limit_val_batches=1",
    "test=false",
    "plots=false",
    "callbacks=none",
]


@pytest.mark.parametrize("option", OPTIONS)
def test_every_freeze_option_composes_and_instantiates(cfg_factory, option):
    callbacks = build_callbacks(cfg_factory(f"freeze={option}"))
    schedules = [c for c in callbacks if isinstance(c, FreezeSchedule)]
    assert len(schedules) == (0 if option == "none" else 1)
    if schedules:
        assert schedules[0].phases[0].trainable == "head" and schedules[0].model_attr == "model"


def test_default_schedule_runs_in_the_ltrain_app_and_unfreezes_at_its_epoch(cfg_factory, tmp_path):
    cfg = cfg_factory("freeze=default", "freeze.phases.1.at_epoch=1", *SMALL)
    run = train(cfg, tmp_path / "run")
    schedule = next(c for c in run.trainer.callbacks if isinstance(c, FreezeSchedule))
    assert schedule.phase == 1 and schedule.trainable_groups() == ["hidden3", "hidden4", "head"]
    optimizer = run.trainer.optimizers[0]
    rates = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert rates == {
        "hidden0": 0.0,
        "hidden1": 0.0,
        "hidden2": 0.0,
        "hidden3": 1e-3 * 0.1,
        "hidden4": 1e-3 * 0.1,
        "head": 1e-3 * 0.1,
    }


def test_an_impossible_spec_fails_before_the_first_step_with_the_groups_listed(cfg_factory, tmp_path):
    cfg = cfg_factory("freeze=default", "freeze.phases.1.trainable=top:12", *SMALL)
    with pytest.raises(LtrainError, match=r"(?s)K=12 must be between 1 and the number of groups, 6.*hidden0.*head"):
        train(cfg, tmp_path / "run")
    assert not list((tmp_path / "run").rglob("*.ckpt"))


def test_groups_command_describes_the_configured_model(cfg_factory):
    text = describe_groups(cfg_factory("model=timm", "model.name=resnet10t", "data.channels=3", "data.image_size=32"))
    assert "resnet10t: layer groups for input (3, 32, 32), 10 classes" in text
    assert [line.split()[1] for line in text.splitlines()[2:8]] == [
        "stem",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
        "head",
    ]


@pytest.mark.parametrize("option", [o for o in OPTIONS if o != "none"])
def test_freeze_groups_is_a_declared_key_set_without_plus(cfg_factory, option):
    groups = "freeze.groups={low: [hidden0, hidden1, hidden2], high: [hidden3, hidden4], head: [head]}"
    assert cfg_factory(f"freeze={option}").freeze.groups is None  # declared, default off
    (schedule,) = [c for c in build_callbacks(cfg_factory(f"freeze={option}", groups)) if isinstance(c, FreezeSchedule)]
    assert schedule.groups == {
        "low": ["hidden0", "hidden1", "hidden2"],
        "high": ["hidden3", "hidden4"],
        "head": ["head"],
    }


def test_explicit_freeze_groups_run_in_the_ltrain_app(cfg_factory, tmp_path):
    groups = "freeze.groups={low: [hidden0, hidden1, hidden2], high: [hidden3, hidden4], head: [head]}"
    cfg = cfg_factory("freeze=default", groups, "freeze.phases.1.at_epoch=1", "freeze.phases.1.trainable=top:2", *SMALL)
    run = train(cfg, tmp_path / "run")
    schedule = next(c for c in run.trainer.callbacks if isinstance(c, FreezeSchedule))
    assert schedule.phase == 1 and schedule.trainable_groups() == ["high", "head"]
    rates = {g["name"]: g["lr"] for g in run.trainer.optimizers[0].param_groups}
    assert rates == {"low": 0.0, "high": 1e-3 * 0.1, "head": 1e-3 * 0.1}
