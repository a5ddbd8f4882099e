"""``ltrain-export``: fold BatchNorm, export to ONNX, check it in ONNX Runtime and report (Hydra app)."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ltrain.cli.common import CONFIG_PATH, exit_on_override_typos, exit_on_user_error


@hydra.main(config_path=CONFIG_PATH, config_name="export", version_base="1.3")
@exit_on_user_error
def app(cfg: DictConfig) -> None:
    from ltrain.export.pipeline import export

    out_dir = HydraConfig.get().runtime.output_dir
    export(cfg, out_dir)
    print(f"report: {out_dir}/export.json")


def main() -> None:
    """``ltrain-export [overrides]``: typos in group or key names get a 'did you mean' before Hydra starts."""
    exit_on_override_typos("export")
    app()


if __name__ == "__main__":
    main()
