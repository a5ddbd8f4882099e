"""Presets honour SPEC.md and refuse contradictory overrides; every toolbox config option instantiates;
the LR range test writes its plot and suggestion."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hydra.utils import instantiate

from ltrain.errors import LtrainError
from ltrain.models import build_model
from ltrain.presets import apply_preset
from ltrain.train import train
from tests.conftest import compose_config

OPTIMIZERS = {
    "sgd": torch.optim.SGD,
    "momentum": torch.optim.SGD,
    "nesterov": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
    "adam": torch.optim.Adam,
    "adamax": torch.optim.Adamax,
    "nadam": torch.optim.NAdam,
    "adamw": torch.optim.AdamW,
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_option_instantiates_with_the_chapter_hyperparameters(name):
    opt = instantiate(compose_config(f"optimizer={name}").optimizer)([torch.nn.Parameter(torch.zeros(3))])
    assert type(opt) is OPTIMIZERS[name]
    g = opt.param_groups[0]
    expected = {
        "momentum": {"momentum": 0.9, "nesterov": False},
        "nesterov": {"momentum": 0.9, "nesterov": True},
        "rmsprop": {"alpha": 0.9},
        "adam": {"betas": (0.9, 0.999)},
        "nadam": {"betas": (0.9, 0.999)},
        "sgd": {"momentum": 0.0},
    }.get(name, {})
    assert {k: (tuple(g[k]) if isinstance(g[k], list) else g[k]) for k in expected} == expected


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_state_loads_back_with_weights_only(name, tmp_path):
    param = torch.nn.Parameter(torch.ones(3))
    opt = instantiate(compose_config(f"optimizer={name}").optimizer)([param])
    param.grad = torch.ones(3)
    opt.step()
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    loaded = torch.load(tmp_path / "opt.pt", weights_only=True)  # what resuming a checkpoint does
    assert loaded["param_groups"][0]["lr"] == opt.param_groups[0]["lr"]


@pytest.mark.parametrize("name", ["power", "exponential", "piecewise", "plateau", "one_cycle"])
def test_every_scheduler_option_builds_a_torch_scheduler(name):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(3))], lr=0.1, momentum=0.9)
    built = instantiate(compose_config(f"scheduler={name}").scheduler).build(opt, total_steps=100)
    assert isinstance(
        built["scheduler"], (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    )


def built(*overrides):
    cfg = compose_config(*overrides)
    changes = apply_preset(cfg)
    return cfg, build_model(cfg.model, 10, (1, 28, 28)), changes


def test_default_preset_is_he_elu_nadam_one_cycle_with_l2_and_batch_norm_only_when_deep():
    cfg, net, changes = built("preset=default")
    assert (cfg.model.init, cfg.model.activation, cfg.optimizer._target_) == ("he_normal", "elu", "torch.optim.NAdam")
    assert cfg.scheduler.scheduler._target_.endswith("OneCycleLR") and cfg.l2 > 0
    assert "early_stopping" in cfg.callbacks
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in net.modules()) and "none" in changes[0]
    cfg, net, changes = built("preset=default", "model.hidden=[20,20,20,20,20,20,20,20,20,20]")
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in net.modules()) == 10 and "before" in changes[0]
    cfg, _, _ = built("preset=default", "optimizer=momentum", "model.batch_norm=after")  # variations are honoured
    assert cfg.optimizer.momentum == 0.9 and cfg.model.batch_norm == "after"


def test_self_normalizing_preset_builds_lecun_selu_alpha_dropout_without_bn_on_standardised_data():
    cfg, net, _ = built("preset=self_normalizing")
    assert cfg.data.standardize is True and cfg.model.init == "lecun_normal"
    kinds = {type(m) for m in net.modules()}
    assert torch.nn.SELU in kinds and torch.nn.AlphaDropout in kinds and torch.nn.BatchNorm1d not in kinds


@pytest.mark.parametrize(
    "override,key",
    [
        ("model.batch_norm=before", "model.batch_norm=before"),
        ("model.activation=relu", "model.activation=relu"),
        ("model.dropout_kind=standard", "model.dropout_kind=standard"),
        ("model=timm", "model.name=resnet18"),
        ("data.standardize=false", "data.standardize=False"),
    ],
)
def test_self_normalizing_preset_refuses_overrides_that_break_self_normalisation(override, key, tmp_path):
    with pytest.raises(LtrainError, match=rf"{key}.*preset self_normalizing needs[\s\S]*preset=null"):
        train(compose_config("preset=self_normalizing", override), tmp_path)
    assert not (tmp_path / "checkpoints").exists()  # refused before any work


def test_low_latency_preset_is_shallow_leaky_relu_with_foldable_bn_and_l1():
    cfg, net, _ = built("preset=low_latency")
    assert len(cfg.model.hidden) == 2 and cfg.l1 > 0
    assert [type(m).__name__ for m in net.hidden0] == ["Linear", "BatchNorm1d", "LeakyReLU"]
    assert net.hidden0.linear.bias is None  # the layer before BN drops its bias
    with pytest.raises(LtrainError, match=r"model.batch_norm=after"):
        built("preset=low_latency", "model.batch_norm=after")


def test_a_preset_on_a_timm_model_says_what_it_left_out():
    cfg, _, changes = built("preset=default", "model=timm", "model.name=resnet10t")
    assert "MLP only" in changes[0] and "init" not in cfg.model


def test_lr_find_writes_the_loss_vs_lr_plot_and_a_suggested_rate(tmp_path):
    cfg = compose_config("tune=lr_find", "tune.num_training=40", "tune.apply=true")
    run = train(cfg, tmp_path)
    report = json.loads((tmp_path / "lr_find.json").read_text())
    assert (tmp_path / "lr_find.png").stat().st_size > 10_000
    assert report["untrusted"] is None and len(report["points"]) >= 25
    # on the descent, near the book's rule (a tenth of the lowest loss's rate); Lightning's own suggestion
    # (steepest against the LR, not log LR) sits at the very start of the descent, far lower
    assert report["min_loss_lr"] / 30 < report["suggested_lr"] < report["min_loss_lr"]
    assert report["lightning_suggested_lr"] < report["suggested_lr"] / 5
    assert run.results["lr_find"]["applied"] and run.module.optimizer_factory.keywords["lr"] == report["suggested_lr"]
    assert run.trainer.global_step == 0  # the finder restored the model; no fit with tune.fit=false


def test_lr_find_does_not_apply_a_suggestion_from_a_flat_curve(tmp_path):
    sweep = ("tune.min_lr=1e-7", "tune.max_lr=1e-5", "tune.num_training=30")  # far too low: the loss does not move
    cfg = compose_config("tune=lr_find", *sweep, "tune.apply=true", "optimizer.lr=0.002")
    with pytest.warns(
        UserWarning, match=r"not applied: the loss curve is flat: it falls by .* The run keeps optimizer.lr=0.002"
    ):
        run = train(cfg, tmp_path)
    report = json.loads((tmp_path / "lr_find.json").read_text())
    assert not report["applied"] and report["untrusted"].startswith("the loss curve is flat")
    assert run.module.optimizer_factory.keywords["lr"] == 0.002


def test_lr_find_trust_rule_refuses_a_suggestion_off_the_descent_and_too_few_points():
    from ltrain.optim.lr_find import steepest_descent, untrusted_reason

    lrs = [10 ** (-6 + k / 4) for k in range(24)]
    # flat until 1e-3, then a fall to 1e-1, then a climb
    losses = [2.3 if lr < 1e-3 else max(2.3 - 0.6 * (math.log10(lr) + 3), 1.1) for lr in lrs[:20]] + [
        1.5,
        2.0,
        3.0,
        5.0,
    ]
    points = list(zip(lrs, losses, strict=True))
    best = steepest_descent(points)
    assert 1e-3 <= best < 1e-1 and untrusted_reason(points, best) is None
    assert "not on the descent" in untrusted_reason(points, lrs[2])  # on the flat stretch before the fall
    assert "not on the descent" in untrusted_reason(points, lrs[21])  # past the lowest loss, where it climbs
    assert "usable points" in untrusted_reason(points[:4], points[0][0])


def test_low_latency_model_folds_every_batch_norm_for_export():
    from ltrain.export import fold_batchnorm

    _, net, _ = built("preset=low_latency")
    net.eval()
    with torch.no_grad():  # non-trivial BN statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.weight.uniform_(0.5, 2)
    x = torch.randn(8, 1, 28, 28)
    folded, report = fold_batchnorm(net, x)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in folded.modules()) and not report.skipped
    torch.testing.assert_close(folded(x), net(x), rtol=1e-4, atol=1e-5)
