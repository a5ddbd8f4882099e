"""The Trainer assembled from config: every callbacks/logger option instantiates, and the CLI prints each line once."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import (
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    RichProgressBar,
    TQDMProgressBar,
)

from ltrain.callbacks import EpochSeed, ResumePlateauSchedulers
from ltrain.history import HistoryCSVLogger
from ltrain.paths import conf_dir
from ltrain.train import build_callbacks, build_loggers, train

BIN = Path(sys.executable).parent
TINY = ["trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2"]
TINY += ["trainer.limit_test_batches=2", "model.hidden=[16]", "plots=false"]
LOGGER_EXTRAS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


def _types(objects) -> list[type]:
    return [type(o) for o in objects]


def test_default_callbacks_are_one_yaml_each_and_checkpoints_land_in_the_run_directory(cfg_factory, tmp_path):
    callbacks = build_callbacks(cfg_factory("trainer.enable_progress_bar=true"), tmp_path)
    assert _types(callbacks) == [
        EpochSeed,
        ResumePlateauSchedulers,
        EarlyStopping,
        LearningRateMonitor,
        TQDMProgressBar,
        ModelCheckpoint,
        ModelCheckpoint,
    ]
    best, last = callbacks[-2:]
    assert (best.monitor, best.filename, last.monitor, last.filename) == ("val/acc", "best", None, "last")
    assert best.dirpath == last.dirpath == str(tmp_path / "checkpoints")
    assert callbacks[0].seed == 0 and build_callbacks(cfg_factory("seed=5"))[0].seed == 5  # ${seed}


def test_callbacks_none_keeps_only_what_an_exact_resume_needs(cfg_factory, tmp_path):
    callbacks = build_callbacks(cfg_factory("callbacks=none"), tmp_path)
    assert _types(callbacks) == [EpochSeed, ResumePlateauSchedulers, ModelCheckpoint, ModelCheckpoint]


def test_the_rich_bar_is_an_option_and_no_bar_wins_when_bars_are_off(cfg_factory, tmp_path):
    rich = build_callbacks(cfg_factory("callbacks/progress_bar=rich", "trainer.enable_progress_bar=true"), tmp_path)
    assert sum(isinstance(c, RichProgressBar) for c in rich) == 1
    off = build_callbacks(cfg_factory("callbacks/progress_bar=rich"), tmp_path)  # the test shrink turns bars off
    assert not any(isinstance(c, (RichProgressBar, TQDMProgressBar)) for c in off)


def test_without_a_best_checkpoint_the_run_tests_its_final_weights_and_says_so(cfg_factory, tmp_path):
    run = train(cfg_factory(*TINY, "callbacks.best_checkpoint=null"), tmp_path)
    assert run.results["best_val_acc"] is None and run.results["best_checkpoint"] == ""
    assert 0 < run.results["test_acc"] <= 1
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.ckpt")) == ["last.ckpt"]


@pytest.mark.parametrize("option", sorted(p.stem for p in (conf_dir() / "logger").glob("*.yaml")))
def test_every_logger_option_instantiates_beside_the_csv_history(cfg_factory, tmp_path, option):
    extra = LOGGER_EXTRAS.get(option)
    if extra and importlib.util.find_spec(extra) is None:
        pytest.skip(f"logger={option} needs the {extra} package (pip install {extra})")
    loggers = build_loggers(cfg_factory(f"logger={option}"), tmp_path)
    assert isinstance(loggers[0], HistoryCSVLogger) and loggers[0].log_dir == str(tmp_path / "logs")
    assert len(loggers) == (1 if option == "csv" else 2)


def test_logger_tensorboard_writes_event_files_and_keeps_metrics_csv(cfg_factory, tmp_path):
    pytest.importorskip("tensorboard", reason="logger=tensorboard needs the tensorboard package")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train(cfg_factory(*TINY, "trainer.max_epochs=2", "logger=tensorboard"), tmp_path)
    assert len(run.trainer.loggers) == 2 and list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    with open(tmp_path / "logs" / "metrics.csv", newline="") as f:
        csv_acc = [float(r["val/acc"]) for r in csv.DictReader(f) if r.get("val/acc")]
    assert [e.value for e in events.Scalars("val/acc")] == pytest.approx(csv_acc) and len(csv_acc) == 2


def test_the_cli_prints_each_log_line_once_and_shows_the_rich_bar(tmp_path):
    out = subprocess.run(
        [str(BIN / "ltrain"), *TINY, f"hydra.run.dir={tmp_path / 'run'}", "callbacks/progress_bar=rich"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout + out.stderr
    assert text.count("`Trainer.fit` stopped: `max_epochs=1` reached.") == 1, text[-3000:]
    assert text.count("Restoring states from the checkpoint path") == 1, text[-3000:]
    assert "`Trainer.fit` stopped" in (tmp_path / "run" / "train.log").read_text()  # Hydra's log file still has it
    assert "Epoch 0/0" in text  # RichProgressBar's description (tqdm's reads "Epoch 0:")
