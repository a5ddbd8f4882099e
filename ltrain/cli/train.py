"""``ltrain``: train or fine-tune a model from config (Hydra app; ``ltrain --help`` lists the groups)."""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ltrain.cli.common import CONFIG_PATH, exit_on_user_error


def _pin_run_dir() -> str:
    """The run directory, resolved once and written back into Hydra's config.

    Lightning's DDP launcher starts the other ranks with ``hydra.run.dir=<HydraConfig run.dir>``, which
    re-resolves ``${now:...}``: a second later it names a new directory. Pinning the resolved path makes
    every rank write into ONE run directory.
    """
    from omegaconf import OmegaConf

    hc = HydraConfig.get()
    run_dir = hc.runtime.output_dir
    OmegaConf.set_readonly(hc, False)
    hc.run.dir = run_dir
    OmegaConf.set_readonly(hc, True)
    return run_dir


def _log_each_line_once() -> None:
    """Leave Lightning's log records to the handlers Hydra gave the root logger (the console and ``train.log``).

    ``import lightning`` gives the ``lightning`` logger a console handler of its own and lets records propagate
    to the root as well, so under Hydra every line was printed twice. Where the root has no handler (e.g.
    ``hydra/job_logging=none``) Lightning keeps its own.
    """
    import logging

    import lightning  # noqa: F401  (its import adds the handler removed here)

    if not logging.getLogger().hasHandlers():
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True


@hydra.main(config_path=CONFIG_PATH, config_name="config", version_base="1.3")
@exit_on_user_error
def train_app(cfg: DictConfig) -> float | None:
    from ltrain.recipes import recipe_runner, run_recipe
    from ltrain.train import train

    _log_each_line_once()
    run_dir = _pin_run_dir()
    if recipe_runner(cfg) is not None:
        from pathlib import Path

        from ltrain.train import record_hydra

        Path(run_dir).mkdir(parents=True, exist_ok=True)
        record_hydra(cfg, Path(run_dir))
        results = run_recipe(cfg, run_dir)
        if isinstance(results.get("source"), dict):
            print(f"{'source (model A)':>20}: test_acc={results['source']['test_acc']:.4f}")
        for arm, metrics in results.get("arms", {}).items():
            print(f"{arm:>20}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
        if results.get("zoo_entry"):
            print(f"zoo entry: {results['zoo_entry']}  (ltrain-zoo show {results['zoo_entry']})")
        print(f"run directory: {run_dir}  (learning_curves.png in each arm's folder)")
        return None
    run = train(cfg, run_dir)
    if run.trainer.is_global_zero:
        acc = run.results.get("test_acc")
        print(f"test accuracy: {acc:.4f}" if acc is not None else "done", f"(run directory: {run.results['run_dir']})")
    return run.results.get("best_val_acc")  # what an Optuna sweep maximises: validation, never test


def main() -> float | None:
    """``ltrain [overrides]`` trains; ``ltrain groups [overrides]`` prints the model's layer groups instead."""
    from ltrain.cli.common import exit_on_override_typos

    if len(sys.argv) > 1 and sys.argv[1] == "groups":
        from ltrain.cli.groups import main as groups_main

        del sys.argv[1]
        exit_on_override_typos("config")
        return groups_main()
    exit_on_override_typos("config")
    return train_app()


if __name__ == "__main__":
    main()
