"""Hydra sweepers and launchers as config: an Optuna LR search runs; the SLURM launcher config composes."""

from __future__ import annotations

import json
import statistics
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


def test_optuna_lr_search_runs_trials_on_a_log_scale_and_prunes_those_below_the_median(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    import optuna

    sweep = tmp_path / "sweep"
    out = subprocess.run(
        [
            str(BIN / "ltrain"),
            "-m",
            "hparams_search=lr_coarse",
            "hydra.sweeper.n_trials=6",
            "trainer.max_epochs=3",
            "trainer.limit_train_batches=8",
            "trainer.enable_progress_bar=false",
            "model.hidden=[16]",
            f"hydra.sweep.dir={sweep}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["name"] == "optuna" and 1e-5 <= best["best_params"]["optimizer.lr"] <= 1.0
    lrs = [yaml.safe_load(p.read_text())["optimizer"]["lr"] for p in sweep.glob("*/config.yaml")]
    assert len(lrs) == 6 and len(set(lrs)) == 6

    # every job reported val/acc per epoch to its own trial, and the pruned ones stopped early for the pruner's reason
    trials = optuna.load_study(study_name="lr_coarse", storage=f"sqlite:///{sweep / 'optuna.db'}").trials
    runs = {t.number: json.loads((sweep / str(t.number) / "results.json").read_text()) for t in trials}
    pruned = [t for t in trials if runs[t.number]["pruned_at_epoch"] is not None]
    assert pruned, [t.intermediate_values for t in trials]
    for t in trials:
        assert sorted(t.intermediate_values) == list(range(runs[t.number]["epochs"]))
        assert t.value == pytest.approx(runs[t.number]["best_val_acc"])  # what the sweeper recorded
    for t in pruned:
        epoch = runs[t.number]["pruned_at_epoch"]
        assert epoch >= 1 and runs[t.number]["epochs"] == epoch + 1 < 3  # no pruning in the warm-up epoch
        earlier = [u.intermediate_values[epoch] for u in trials[: t.number] if epoch in u.intermediate_values]
        assert len(earlier) >= 3 and t.intermediate_values[epoch] < statistics.median(earlier)


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
