"""ltrain-predict, the risk_sensitive preset and its callback on real (tiny) Lightning runs of Fashion-MNIST.

(Fashion-MNIST's binary IDX files load in a second; the embedded digits are parsed from text each time.)
"""

from __future__ import annotations

import csv
import json

import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from ltrain.errors import LtrainError
from ltrain.inference.predict import predict
from ltrain.paths import conf_dir
from ltrain.train import train
from tests.conftest import compose_config

pytestmark = pytest.mark.fashion_mnist  # reads the real Fashion-MNIST files (make test installs them)

PLAIN = [  # the default MLP (no dropout), as `ltrain data=fashion_mnist` trains it
    "data=fashion_mnist",
    "data.train_per_class=200",
    "model.hidden=[32]",
    "trainer.max_epochs=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=2",
    "data.eval_batch_size=64",
]
TINY = [*PLAIN, "mc.samples=6"]


@pytest.fixture(scope="module")
def risk_run(tmp_path_factory):
    """A risk_sensitive run (dropout MLP, MC-dropout test callback) trained for a few steps."""
    run_dir = tmp_path_factory.mktemp("risk_run")
    run = train(compose_config("preset=risk_sensitive", *TINY), run_dir)
    return run_dir, run


def compose_predict(*overrides: str):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("predict", overrides=list(overrides))


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_risk_sensitive_preset_logs_mc_dropout_metrics_and_a_reliability_diagram(risk_run):
    run_dir, run = risk_run
    metrics = run.trainer.callback_metrics
    for key in ("test/mc_acc", "test/mc_ece", "test/mc_nll", "test/mc_brier", "test/mc_mutual_info", "test/ece"):
        assert key in metrics, key
    assert 0.4 < float(metrics["test/mc_acc"]) <= 1.0  # 32 steps beat chance (0.1) by far
    assert float(metrics["test/mc_mutual_info"]) > 0
    assert (run_dir / "reliability.png").is_file()


def test_risk_sensitive_preset_refuses_a_network_without_dropout_before_training(tmp_path):
    with pytest.raises(LtrainError, match=r"model.dropout=0.2"):
        train(compose_config("preset=risk_sensitive", "model.dropout=0.0", *TINY), tmp_path)
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_predict_writes_csv_and_metrics_for_the_runs_test_split(risk_run, tmp_path):
    run_dir, _ = risk_run
    report = predict(compose_predict(f"source={run_dir}", "mc.samples=5", "limit=40"), tmp_path)
    rows = read_csv(tmp_path / "predictions.csv")
    assert len(rows) == 40 == report["inputs"]
    assert report["mc"]["path"] == "fast" and report["mc"]["sites"] == ["hidden0.dropout"]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert set(saved["metrics"]) == {"deterministic", "mc_dropout"}
    row = rows[0]
    probs = [float(v) for k, v in row.items() if k.startswith("p[")]
    assert len(probs) == 10
    assert abs(sum(probs) - 1) < 1e-4 and int(row["predicted"]) == max(range(10), key=probs.__getitem__)
    assert 0 <= float(row["agreement"]) <= 1 and float(row["mutual_info"]) >= 0
    assert (tmp_path / "reliability.png").is_file()
    again = predict(compose_predict(f"source={run_dir}", "mc.samples=5", "limit=40"), tmp_path / "again")
    assert again["metrics"] == report["metrics"], "the same mc.seed must give the same predictions"


def test_a_folder_of_images_gets_the_same_predictions_as_the_split_it_came_from(risk_run, tmp_path):
    run_dir, run = risk_run
    test_images = run.datamodule.splits["test"].images[:6]  # uint8 (N, 1, 28, 28)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, img in enumerate(test_images):
        Image.fromarray(img[0].numpy()).save(folder / f"digit{i}.png")
    predict(compose_predict(f"source={run_dir}", f"images={folder}", "mc.samples=0"), tmp_path / "folder")
    predict(compose_predict(f"source={run_dir}", "limit=6", "mc.samples=0"), tmp_path / "split")
    from_folder = read_csv(tmp_path / "folder" / "predictions.csv")
    from_split = read_csv(tmp_path / "split" / "predictions.csv")
    for a, b in zip(from_folder, from_split, strict=True):
        assert a["input"].endswith(".png")
        columns = [k for k in a if k.startswith("p[")]
        assert len(columns) == 10
        for k in columns:
            assert abs(float(a[k]) - float(b[k])) < 1e-5


def test_predict_says_what_a_bad_source_should_be(tmp_path):
    with pytest.raises(LtrainError, match="source= is required"):
        predict(compose_predict(), tmp_path)
    with pytest.raises(LtrainError, match="neither a run directory nor a checkpoint"):
        predict(compose_predict(f"source={tmp_path / 'nope'}"), tmp_path)
    with pytest.raises(LtrainError, match="checkpoint=best"):
        predict(compose_predict(f"source={tmp_path}"), tmp_path)


def test_predict_on_a_default_run_without_dropout_predicts_deterministically_unless_mc_is_asked_for(tmp_path):
    """Issue 16's leftover: `ltrain-predict source=RUN` on a default run (no dropout) used to fail."""
    run_dir = tmp_path / "plain"
    train(compose_config(*PLAIN, "test=false", "plots=false"), run_dir)
    report = predict(compose_predict(f"source={run_dir}", "limit=30"), tmp_path / "auto")
    assert report["mc"]["samples"] == 0 and "has no dropout" in report["mc"]["note"]
    assert set(report["metrics"]) == {"deterministic"}
    rows = read_csv(tmp_path / "auto" / "predictions.csv")
    assert len(rows) == 30 and "mutual_info" not in rows[0]
    assert all(r["predicted"] == r["deterministic_predicted"] for r in rows)
    with pytest.raises(LtrainError, match=r"has no dropout.*model.dropout=0.2"):
        predict(compose_predict(f"source={run_dir}", "limit=30", "mc.samples=30"), tmp_path / "asked")
