"""Param-group splitting and per-group rate scaling (ltrain.optim.param_groups) under every scheduler config.

Each scheduler comes from its own ``conf/scheduler/*.yaml`` (shrunk to a few steps), is built as
``configure_optimizers`` builds it, then the optimizer's groups are split by layer group and scaled as
FreezeSchedule does; after k steps every group's rate must equal the schedule's closed form times its
scale, and keep doing so after a mid-run change of scales. Plain objects, no Trainer.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from ltrain.optim.param_groups import (
    group_lr_reference,
    scale_group_lrs,
    schedule_progress,
    split_param_groups,
)

SCHEDULER_DIR = Path(__file__).resolve().parents[2] / "conf" / "scheduler"
LR0 = 0.1  # the weights' lr; biases get 2 * LR0, as outside projects often give them
TOTAL = 20  # run length (optimizer steps) given to schedulers that need one

# Each config shrunk so its whole shape shows within TOTAL steps.
SHRINK = {
    "power": {"decay_steps": 4, "power": 1.5},
    "exponential": {"decay_steps": 5, "decay_rate": 0.1},
    "piecewise": {"boundaries": [3, 7], "factors": [1.0, 0.5, 0.1]},
    "plateau": {"patience": 1, "factor": 0.5},
    "one_cycle": {"max_lr": 0.4},
}


def closed_form(kind: str, k: int, base: float) -> float:
    """The rate after k scheduler steps for a group whose optimizer lr is ``base``, written from the formulas."""
    s = SHRINK[kind]
    if kind == "power":
        return base / (1 + k / s["decay_steps"]) ** s["power"]
    if kind == "exponential":
        return base * s["decay_rate"] ** (k / s["decay_steps"])
    if kind == "piecewise":
        return base * s["factors"][sum(k >= b for b in s["boundaries"])]
    if kind == "plateau":  # constant metric: best at step 1, then a cut every patience + 1 steps
        return base * s["factor"] ** (max(k - 1, 0) // (s["patience"] + 1))
    if kind == "one_cycle":  # three linear phases (conf: pct_start 0.45, div 10, final_div 1000)
        peak = base
        low = peak / 10.0
        end1 = 0.45 * TOTAL - 1
        end2 = 2 * end1
        if k <= end1:
            return low + (peak - low) * k / end1
        if k <= end2:
            return peak + (low - peak) * (k - end1) / (end2 - end1)
        return low + (low / 1000.0 - low) * (k - end2) / (TOTAL - 1 - end2)
    raise KeyError(kind)


class Net(nn.Module):
    """Lightning's transfer-learning layout: a backbone and a classifier."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4))
        self.classifier = nn.Linear(4, 2)
        self.extra = nn.Parameter(torch.zeros(2))  # in no layer group: stays in "other"


ORDER = ["stem", "body", "head"]


def layer_groups(net: Net) -> dict[int, str]:
    modules = {"stem": net.backbone[0], "body": net.backbone[2], "head": net.classifier}
    return {id(p): name for name, m in modules.items() for p in m.parameters()}


def make_optimizer(net: Net) -> torch.optim.Optimizer:
    """Two groups as outside projects write them: weights with decay, biases (and extras) without, at 2x lr."""
    weights = [p for n, p in net.named_parameters() if n.endswith("weight")]
    others = [p for n, p in net.named_parameters() if not n.endswith("weight")]
    return torch.optim.SGD(
        [{"params": weights, "weight_decay": 1e-4}, {"params": others, "weight_decay": 0.0, "lr": 2 * LR0}],
        lr=LR0,
        momentum=0.9,
    )


def build(kind: str):
    """(net, optimizer, scheduler) from conf/scheduler/<kind>.yaml, as configure_optimizers builds them."""
    cfg = OmegaConf.load(SCHEDULER_DIR / f"{kind}.yaml")
    for key, value in SHRINK[kind].items():
        cfg.scheduler[key] = value
    net = Net()
    opt = make_optimizer(net)
    scheduler = instantiate(cfg).build(opt, total_steps=TOTAL)["scheduler"]
    return net, opt, scheduler


def step(opt, scheduler, n: int) -> None:
    for _ in range(n):
        opt.step()  # no gradients: no optimizer state, parameters untouched
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(1.0)  # a metric that never improves after the first value
        else:
            scheduler.step()


def origin_base(kind: str, group: dict) -> float:
    """The rate at scale 1 the group's schedule is written for (OneCycleLR's max_lr replaces the optimizer lr)."""
    if kind == "one_cycle":
        return SHRINK["one_cycle"]["max_lr"]
    return 2 * LR0 if group["weight_decay"] == 0.0 else LR0


def test_every_scheduler_config_is_covered():
    assert sorted(p.stem for p in SCHEDULER_DIR.glob("*.yaml")) == sorted(SHRINK)


def test_split_cuts_each_group_by_layer_group_bottom_to_top_and_copies_its_hyperparameters():
    net = Net()
    opt = make_optimizer(net)
    split_param_groups(opt, layer_groups(net), ORDER)

    got = [(g["name"], g["weight_decay"], g["lr"], len(g["params"])) for g in opt.param_groups]
    assert got == [
        ("stem", 1e-4, LR0, 1),
        ("body", 1e-4, LR0, 1),
        ("head", 1e-4, LR0, 1),
        ("stem", 0.0, 2 * LR0, 1),
        ("body", 0.0, 2 * LR0, 1),
        ("head", 0.0, 2 * LR0, 1),
        ("other", 0.0, 2 * LR0, 1),
    ]
    assert opt.param_groups[0]["params"][0] is net.backbone[0].weight
    assert opt.param_groups[-1]["params"][0] is net.extra
    every = [p for g in opt.param_groups for p in g["params"]]
    assert len(every) == len(set(map(id, every))) == len(list(net.parameters()))


def test_split_after_the_first_step_is_refused():
    net = Net()
    opt = make_optimizer(net)
    loss = net.classifier(net.backbone(torch.ones(1, 3))).sum() + net.extra.sum()
    loss.backward()
    opt.step()  # momentum buffers now exist
    with pytest.raises(RuntimeError, match="before the optimizer's first step"):
        split_param_groups(opt, layer_groups(net), ORDER)


@pytest.mark.parametrize("kind", sorted(SHRINK))
def test_split_widens_the_schedulers_per_group_lists(kind):
    net, opt, scheduler = build(kind)
    split_param_groups(opt, layer_groups(net), ORDER, [scheduler])
    n = len(opt.param_groups)
    assert n == 7
    for attr in ("base_lrs", "lr_lambdas", "min_lrs", "_last_lr"):
        values = getattr(scheduler, attr, None)
        if isinstance(values, list):
            assert len(values) == n, attr


@pytest.mark.parametrize("kind", sorted(SHRINK))
def test_scaled_groups_follow_the_closed_form_and_keep_it_when_the_scales_change(kind):
    net, opt, scheduler = build(kind)
    split_param_groups(opt, layer_groups(net), ORDER, [scheduler])
    refs = group_lr_reference(opt, [scheduler])
    scale_of = {"stem": 0.0, "body": 0.1, "head": 1.0, "other": 1.0}  # stem frozen, body at a tenth
    scales = [scale_of[g["name"]] for g in opt.param_groups]
    scale_group_lrs(opt, [scheduler], refs, scales, progress=1.0)

    def check(k: int) -> None:
        for g, s in zip(opt.param_groups, scales, strict=True):
            want = closed_form(kind, k, origin_base(kind, g)) * s
            assert g["lr"] == pytest.approx(want, rel=1e-6, abs=1e-12), (kind, k, g["name"], g["weight_decay"])

    check(0)
    k1 = 9  # inside the schedule's second phase / after the first cuts
    step(opt, scheduler, k1)
    check(k1)

    # mid-run change, as FreezeSchedule's next phase does: the stem thaws at 0.1, the body goes to 1
    progress = schedule_progress(opt, refs, scales)
    assert progress == pytest.approx(closed_form(kind, k1, 1.0) / closed_form(kind, 0, 1.0))
    scale_of = {"stem": 0.1, "body": 1.0, "head": 1.0, "other": 1.0}
    scales = [scale_of[g["name"]] for g in opt.param_groups]
    scale_group_lrs(opt, [scheduler], refs, scales, progress)
    check(k1)
    step(opt, scheduler, 8)
    check(k1 + 8)


@pytest.mark.parametrize("kind", sorted(SHRINK))
def test_a_frozen_group_stays_at_zero_rate_all_run(kind):
    net, opt, scheduler = build(kind)
    split_param_groups(opt, layer_groups(net), ORDER, [scheduler])
    refs = group_lr_reference(opt, [scheduler])
    scales = [0.0 if g["name"] == "stem" else 1.0 for g in opt.param_groups]
    scale_group_lrs(opt, [scheduler], refs, scales, progress=1.0)
    for _ in range(TOTAL - 1):
        step(opt, scheduler, 1)
        stem = [g["lr"] for g in opt.param_groups if g["name"] == "stem"]
        assert stem == [0.0, 0.0]
        assert all(g["lr"] > 0 for g in opt.param_groups if g["name"] != "stem")


def test_one_cycle_momentum_is_cycled_in_every_split_group():
    net, opt, scheduler = build("one_cycle")
    split_param_groups(opt, layer_groups(net), ORDER, [scheduler])
    end1 = 0.45 * TOTAL - 1
    for k in range(TOTAL - 1):
        # momentum runs against the rate: 0.95 -> 0.85 at the peak -> 0.95, then stays at 0.95
        want = 0.95 - 0.1 * k / end1 if k <= end1 else min(0.95, 0.85 + 0.1 * (k - end1) / end1)
        assert [g["momentum"] for g in opt.param_groups] == pytest.approx([want] * 7), k
        step(opt, scheduler, 1)


def test_schedule_progress_reads_the_first_active_group():
    net, opt, scheduler = build("exponential")
    split_param_groups(opt, layer_groups(net), ORDER, [scheduler])
    refs = group_lr_reference(opt, [scheduler])
    scales = [0.0 if g["name"] == "stem" else 0.5 for g in opt.param_groups]
    scale_group_lrs(opt, [scheduler], refs, scales, progress=1.0)
    step(opt, scheduler, 5)
    assert schedule_progress(opt, refs, scales) == pytest.approx(0.1)
    assert schedule_progress(opt, refs, [0.0] * len(scales)) == 1.0  # all frozen: no progress to read
    assert math.isclose(opt.param_groups[1]["lr"], LR0 * 0.5 * 0.1, rel_tol=1e-9)
