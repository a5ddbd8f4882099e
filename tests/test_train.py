"""The main job: trains on the embedded digits, is reproducible, writes its artefacts; bad models fail early."""

from __future__ import annotations

import json

import pytest

from ltrain.errors import LtrainError
from ltrain.models import build_model
from ltrain.train import train


def test_two_runs_with_the_same_seed_give_identical_test_accuracy(cfg_factory, tmp_path):
    overrides = ["trainer.max_epochs=2", "seed=7"]
    a = train(cfg_factory(*overrides), tmp_path / "a")
    b = train(cfg_factory(*overrides), tmp_path / "b")
    assert a.results["test_acc"] == b.results["test_acc"]
    assert a.results["test_acc"] > 0.85  # two epochs of the 5x100 ELU MLP on 3,500 digits


def test_a_run_writes_checkpoints_results_and_a_learning_curve(cfg_factory, tmp_path):
    train(cfg_factory("trainer.max_epochs=1"), tmp_path)
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file() and (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "learning_curves.png").stat().st_size > 1000
    results = json.loads((tmp_path / "results.json").read_text())
    assert 0 < results["test_acc"] <= 1 and results["data"]["sizes"] == {"train": 3500, "val": 500, "test": 1000}


def test_unknown_model_name_fails_before_any_work_and_names_close_matches(cfg_factory, tmp_path):
    with pytest.raises(LtrainError, match="resnet18"):
        train(cfg_factory("model.name=resnet_18x"), tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def test_a_timm_model_trains_on_resized_three_channel_digits(cfg_factory, tmp_path):
    cfg = cfg_factory(
        "model=timm",
        "model.name=resnet10t",
        "data.image_size=32",
        "data.channels=3",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
    )
    run = train(cfg, tmp_path)
    assert run.results["global_step"] == 3
    assert run.module.model.default_cfg["architecture"] == "resnet10t"


def test_timm_name_with_the_mlp_config_says_which_group_to_use():
    with pytest.raises(LtrainError, match="model=timm"):
        build_model({"name": "resnet18", "hidden": [10]}, 10, (1, 28, 28))
