"""Hydra sweepers and launchers as config: an Optuna LR search runs; the SLURM launcher config composes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from ltrain.paths import conf_dir

BIN = Path(sys.executable).parent


def _compose_with_hydra(*overrides):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def test_optuna_lr_search_runs_trials_on_a_log_scale_and_maximises_validation_accuracy(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "sweep"
    out = subprocess.run([str(BIN / "ltrain"), "-m", "hparams_search=lr_coarse", "hydra.sweeper.n_trials=3",
                          "trainer.max_epochs=1", "trainer.limit_train_batches=4", "trainer.enable_progress_bar=false",
                          "model.hidden=[16]", f"hydra.sweep.dir={sweep}"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["name"] == "optuna" and 1e-5 <= best["best_params"]["optimizer.lr"] <= 1.0
    lrs = [yaml.safe_load(p.read_text())["optimizer"]["lr"] for p in sweep.glob("*/config.yaml")]
    assert len(lrs) == 3 and len(set(lrs)) == 3


def test_slurm_launcher_config_composes_one_task_per_device():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = _compose_with_hydra("cluster=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == 4 and launcher.gpus_per_node == 4 and launcher.nodes == 2


@pytest.mark.parametrize("option", ["cpu", "gpu", "ddp", "ddp_cpu", "fsdp", "tpu"])
def test_every_trainer_option_composes_to_a_lightning_trainer(option):
    cfg = _compose_with_hydra(f"trainer={option}")
    assert cfg.trainer._target_ == "lightning.Trainer"
    if option.startswith("ddp"):
        assert cfg.trainer.strategy == "ddp" and "sync_batchnorm" in cfg.trainer
