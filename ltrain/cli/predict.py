"""``ltrain-predict``: predictions with MC-dropout uncertainty from a trained run (Hydra app, conf/predict.yaml)."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ltrain.cli.common import CONFIG_PATH, exit_on_override_typos, exit_on_user_error


@hydra.main(config_path=CONFIG_PATH, config_name="predict", version_base="1.3")
@exit_on_user_error
def app(cfg: DictConfig) -> None:
    from ltrain.inference.predict import predict
    from ltrain.validate import validate_predict_config

    validate_predict_config(cfg)
    out_dir = HydraConfig.get().runtime.output_dir
    report = predict(cfg, out_dir)
    if report["mc"].get("note"):
        print(f"mc: {report['mc']['note']}")
    for arm, metrics in report.get("metrics", {}).items():
        print(f"{arm}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    print(f"{report['inputs']} predictions written to {out_dir}/predictions.csv")


def main() -> None:
    """``ltrain-predict [overrides]``: typos in group or key names get a 'did you mean' before Hydra starts."""
    exit_on_override_typos("predict")
    app()


if __name__ == "__main__":
    main()
