"""Toolbox recipes: init_depth reproduces the lecture's numbers; loss_activation and cifar10_deep run
end to end (smoke variants on the embedded digits; the full runs are marked slow)."""

from __future__ import annotations

import itertools
import json

import pytest

from ltrain.recipes import run_recipe
from tests.conftest import compose_config

SMOKE = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]


def test_init_depth_reproduces_the_lectures_picture(tmp_path):
    results = run_recipe(compose_config("recipe=init_depth"), tmp_path)
    arms = results["arms"]
    assert arms["tanh_std_0.01"]["last_over_first"] < 0.01  # collapses to zero (measured 1.4e-6)
    assert arms["tanh_std_1.0"]["saturated_mean"] > 0.5  # most outputs beyond |0.99| (measured 90%)
    assert arms["tanh_xavier"]["max_over_min_std"] < 3  # keeps a spread (measured 0.63 -> 0.23: 2.74)
    relu_x = results["per_layer"]["relu_xavier"]["std"]
    ratios = [b / a for a, b in itertools.pairwise(relu_x)]
    assert all(0.6 < q < 0.8 for q in ratios)  # Xavier halves the variance per ReLU layer: std x 0.71
    assert 0.8 < arms["relu_he"]["last_over_first"] < 1.25  # He keeps it (measured 0.99)
    assert (tmp_path / "init_depth.png").stat().st_size > 10_000 and "tanh_xavier" in (
        tmp_path / "init_depth.md"
    ).read_text()
    assert json.loads((tmp_path / "results.json").read_text())["arms"]["relu_he"]["std_first"] > 0.5


def test_loss_activation_trains_every_arm_and_plots_the_curves(tmp_path):
    cfg = compose_config("recipe=loss_activation", *SMOKE, "model.hidden=[32,16]")
    cfg.recipe.arms = {
        "relu": {"loss": "cross_entropy", "model.activation": "relu"},
        "mse_sigmoid": {"loss": "mse", "model.activation": "sigmoid"},
    }
    results = run_recipe(cfg, tmp_path)
    assert set(results["arms"]) == {"relu", "mse_sigmoid"}
    assert results["curves"]["mse_sigmoid"]["train_loss"][0] < 0.1  # an MSE on probabilities, not a cross-entropy
    assert results["curves"]["relu"]["train_loss"][0] > 1.0
    assert (tmp_path / "loss_activation.png").is_file() and (tmp_path / "relu" / "results.json").is_file()


def test_cifar10_deep_smoke_variant_runs_every_arm_on_the_embedded_digits(tmp_path):
    cfg = compose_config(
        "recipe=cifar10_deep",
        "data=mnist_embedded",
        "recipe.depth=3",
        "recipe.width=16",
        *SMOKE,
        "recipe.mc_samples=4",
        "recipe.test_limit=64",
    )
    results = run_recipe(cfg, tmp_path)
    arms = results["arms"]
    assert list(arms) == ["elu_he_nadam", "batch_norm", "selu", "alpha_dropout", "one_cycle"]
    assert all(0 <= a["test_acc"] <= 1 for a in arms.values())
    assert "test_acc_mc" in arms["alpha_dropout"] and "test_acc_mc" not in arms["selu"]
    from omegaconf import OmegaConf

    one_cycle = OmegaConf.load(tmp_path / "one_cycle" / "config.yaml")
    assert one_cycle.scheduler.scheduler._target_.endswith("OneCycleLR") and one_cycle.model.dropout_kind == "alpha"
    assert OmegaConf.load(tmp_path / "batch_norm" / "config.yaml").model.batch_norm == "before"
    assert (tmp_path / "cifar10_deep.png").is_file()


@pytest.mark.slow
def test_loss_activation_full_sigmoid_trains_slower(tmp_path):
    """The chapter's claim on the 3,500 embedded training digits, 10 epochs (a few minutes on 2 idle cores).

    Measured (seed 0), val acc after epoch 1: relu 0.854, mse_relu 0.862, sigmoid 0.318, tanh 0.876,
    softsign 0.846, elu 0.864. Sigmoid is far slower; MSE is NOT slower than cross-entropy here (Adam,
    easy digits), so that half of the claim is reported, not asserted.
    """
    results = run_recipe(compose_config("recipe=loss_activation", "trainer.max_epochs=10"), tmp_path)
    arms = results["arms"]
    assert (
        arms["sigmoid"]["val_acc_epoch1"]
        < min(arms[a]["val_acc_epoch1"] for a in ("tanh", "softsign", "relu", "elu")) - 0.3
    )
    assert arms["sigmoid"]["val_acc_last"] < max(arms[a]["val_acc_last"] for a in ("tanh", "softsign", "relu", "elu"))
