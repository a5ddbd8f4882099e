"""TrainingDiagnostics on real Trainers: per-layer statistics, dead ReLUs, the ln(C) check at init, and a
stop naming the learning rate when the loss diverges."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

from ltrain.callbacks import TrainingDiagnostics
from ltrain.callbacks.diagnostics import ActivationRecorder, DiagnosticsWarning
from ltrain.errors import LtrainError
from ltrain.train import train
from tests.conftest import compose_config
from tests.tiny_runs import tiny_module, tiny_trainer

DIAG = "+callbacks.diagnostics._target_=ltrain.callbacks.TrainingDiagnostics"


def test_an_absurd_learning_rate_stops_the_run_with_a_message_naming_it(tmp_path):
    cfg = compose_config(
        "optimizer=sgd",
        "optimizer.lr=100",
        DIAG,
        "trainer.max_epochs=3",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "plots=false",
    )
    with pytest.warns(DiagnosticsWarning, match=r"lr=100\b.*too high") as record:
        run = train(cfg, tmp_path)
    assert run.results["global_step"] < 20  # stopped within the first epoch (55 steps), not after 3 epochs
    report = json.loads((tmp_path / "diagnostics.json").read_text())
    messages = [str(w.message) for w in record if w.category is DiagnosticsWarning]
    assert "lr=100" in report["stop_message"] and messages == [report["stop_message"]]


def test_divergence_can_raise_instead_of_stopping(digits_datamodule, tmp_path):
    module, _ = tiny_module(digits_datamodule, "optimizer=sgd", "optimizer.lr=100")
    with pytest.raises(LtrainError, match="lr=100"):
        tiny_trainer(
            tmp_path, TrainingDiagnostics(on_divergence="raise", plots=False), max_epochs=3, limit_train_batches=20
        ).fit(module, datamodule=digits_datamodule)


def test_a_sane_run_records_per_layer_statistics_and_plots_them(digits_datamodule, tmp_path):
    module, _ = tiny_module(digits_datamodule, "model.activation=relu", "optimizer.lr=0.001")
    diag = TrainingDiagnostics(every_n_steps=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DiagnosticsWarning)  # neither the init check nor divergence fires
        tiny_trainer(tmp_path, diag, max_epochs=1, limit_train_batches=6).fit(module, datamodule=digits_datamodule)
    assert [row["step"] for row in diag.history] == [0, 2, 4]
    layers = diag.history[0]["layers"]
    assert set(layers) == {"hidden0.act", "hidden1.act", "hidden0.linear", "hidden1.linear", "head"}
    assert {"mean", "std", "dead"} <= set(layers["hidden0.act"]) and layers["hidden0.act"]["std"] > 0
    assert layers["head"]["grad_norm"] > 0
    assert diag.stop_message is None and diag.initial_loss == pytest.approx(math.log(10), rel=0.5)
    assert (tmp_path / "diagnostics.png").stat().st_size > 10_000
    assert len(json.loads((tmp_path / "diagnostics.json").read_text())["history"]) == 3


def test_recorded_statistics_equal_a_direct_computation_and_count_dead_relus(digits_datamodule):
    module, _ = tiny_module(digits_datamodule, "model.activation=relu")
    net = module.model
    with torch.no_grad():
        net.hidden1.linear.bias[:4] = -1e4  # 4 of 16 units can never fire
    x, _ = next(iter(digits_datamodule.train_dataloader()))
    with ActivationRecorder(net) as rec:
        net(x)
    out = net.hidden0(net.flatten(x))
    assert rec.stats["hidden0.act"]["mean"] == pytest.approx(out.mean().item(), rel=1e-5)
    assert rec.stats["hidden0.act"]["std"] == pytest.approx(out.std().item(), rel=1e-5)
    h1 = net.hidden1(out)
    dead = ((h1 > 0).sum(0) == 0).float().mean().item()  # units silent on every example of this batch
    assert rec.stats["hidden1.act"]["dead"] == pytest.approx(dead)
    assert dead >= 4 / 16  # the 4 disabled units at least (others may happen to be silent on this batch)


def test_a_loss_far_from_ln_c_at_initialisation_is_warned_about(digits_datamodule, tmp_path):
    module, _ = tiny_module(digits_datamodule)
    with torch.no_grad():
        module.model.head.weight.mul_(50)  # confident random outputs: initial loss >> ln(10)
    with pytest.warns(DiagnosticsWarning, match=r"ln\(10\) = 2.303"):
        tiny_trainer(
            tmp_path, TrainingDiagnostics(plots=False, explode_factor=1e9), max_epochs=1, limit_train_batches=1
        ).fit(module, datamodule=digits_datamodule)


def test_bad_arguments_say_what_is_allowed():
    with pytest.raises(LtrainError, match="stop"):
        TrainingDiagnostics(on_divergence="explode")
