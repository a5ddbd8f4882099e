"""``ltrain``: train or fine-tune a model from config (Hydra app; ``ltrain --help`` lists the groups)."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ltrain.cli.common import CONFIG_PATH, exit_on_user_error


@hydra.main(config_path=CONFIG_PATH, config_name="config", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    from ltrain.train import train

    results = train(cfg, HydraConfig.get().runtime.output_dir)
    if results["trainer"].is_global_zero:
        acc = results.get("test_acc")
        print(f"test accuracy: {acc:.4f}" if acc is not None else "done", f"(run directory: {HydraConfig.get().runtime.output_dir})")
    return results.get("test_acc")  # the value an Optuna sweep optimises


if __name__ == "__main__":
    main()
