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


def _median_pruner_decisions(trial, completed_before, n_startup_trials=3, n_warmup_steps=1):
    """Optuna's MedianPruner, recomputed from the stored study: after each reported epoch, prune when at least
    `n_startup_trials` trials had COMPLETED before this one started and the best value this trial has reached so
    far is below the median of those trials' values at that epoch (never in the warm-up epochs)."""
    decisions, best = {}, -float("inf")
    for epoch in sorted(trial.intermediate_values):
        best = max(best, trial.intermediate_values[epoch])
        at_epoch = [u.intermediate_values[epoch] for u in completed_before if epoch in u.intermediate_values]
        decisions[epoch] = (
            len(completed_before) >= n_startup_trials
            and epoch >= n_warmup_steps
            and bool(at_epoch)
            and best < statistics.median(at_epoch)
        )
    return decisions


def test_optuna_lr_search_runs_trials_on_a_log_scale_and_prunes_those_below_the_median(tmp_path):
    optuna = pytest.importorskip("optuna", minversion="4.0", reason="the optuna extra: pip install 'ltrain[optuna]'")

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

    # every job reported val/acc per epoch to ITS OWN trial (the number the sweeper gave it), the pruner's
    # decisions recomputed from the study are exactly where runs stopped, and the sweeper recorded the rest
    trials = optuna.load_study(study_name="lr_coarse", storage=f"sqlite:///{sweep / 'optuna.db'}").trials
    runs = {t.number: json.loads((sweep / str(t.number) / "results.json").read_text()) for t in trials}
    states = optuna.trial.TrialState
    assert [runs[t.number]["optuna_trial"] for t in trials] == list(range(6))
    for t in trials:
        run = runs[t.number]
        assert t.params["optimizer.lr"] == pytest.approx(
            yaml.safe_load((sweep / str(t.number) / "config.yaml").read_text())["optimizer"]["lr"]
        )
        assert sorted(t.intermediate_values) == list(range(run["epochs"]))
        completed_before = [u for u in trials[: t.number] if u.state == states.COMPLETE]  # n_jobs=1: one at a time
        decisions = _median_pruner_decisions(t, completed_before)
        first_prune = min((e for e, prune in decisions.items() if prune), default=None)
        assert run["pruned_at_epoch"] == first_prune, (t.number, decisions, t.intermediate_values)
        if first_prune is None:
            assert t.state == states.COMPLETE and t.value == pytest.approx(run["best_val_acc"])
        else:
            assert t.state == states.PRUNED and max(t.intermediate_values) == first_prune
    assert any(t.state == states.PRUNED for t in trials), [t.intermediate_values for t in trials]
    assert best["best_value"] == max(t.value for t in trials if t.state == states.COMPLETE)


def test_sweep_overrides_become_optuna_distributions_and_plain_values_stay_fixed():
    pytest.importorskip("optuna", minversion="4.0", reason="the optuna extra: pip install 'ltrain[optuna]'")
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from hydra_plugins.ltrain_optuna_sweeper.optuna_sweeper import search_space

    space, fixed = search_space(
        [
            "optimizer.lr=tag(log, interval(1e-5, 1.0))",
            "model.dropout=interval(0.1, 0.5)",
            "data.batch_size=choice(32, 64)",
            "model.depth=range(1, 8, 2)",  # Hydra's range stops before 8: 1, 3, 5, 7
            "seed=3",
        ]
    )
    assert space == {
        "optimizer.lr": FloatDistribution(1e-5, 1.0, log=True),
        "model.dropout": FloatDistribution(0.1, 0.5),
        "data.batch_size": CategoricalDistribution([32, 64]),
        "model.depth": IntDistribution(1, 7, step=2),
    }
    assert fixed == {"seed": "3"}


def test_optuna_pruning_outside_a_sweep_is_refused_before_training(tmp_path):
    from ltrain.callbacks import OptunaPruning
    from ltrain.errors import LtrainError

    with pytest.raises(LtrainError, match="runs inside an Optuna sweep, which gives each job its trial number"):
        OptunaPruning(storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="lr_coarse", trial_number=None)


def test_optuna_pruning_refuses_a_trial_that_already_finished(tmp_path):
    optuna = pytest.importorskip("optuna", minversion="4.0", reason="the optuna extra: pip install 'ltrain[optuna]'")
    from ltrain.callbacks import OptunaPruning
    from ltrain.errors import LtrainError

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.tell(study.ask(), 0.5)  # trial 0: COMPLETE
    running = study.ask()  # trial 1: RUNNING
    callback = OptunaPruning(storage=storage, study_name="s", trial_number="1")
    _, trial = callback._load_trial()
    trial.report(0.25, step=0)  # the callback's trial IS trial 1 in the storage
    assert study.trials[running.number].intermediate_values == {0: 0.25}
    with pytest.raises(LtrainError, match="trial 0 of study 's' is COMPLETE, not RUNNING"):
        OptunaPruning(storage=storage, study_name="s", trial_number=0)._load_trial()
    with pytest.raises(LtrainError, match="has no trial 7"):
        OptunaPruning(storage=storage, study_name="s", trial_number=7)._load_trial()


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
