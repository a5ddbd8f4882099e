"""``ltrain-report dir=RUNS``: aggregate a multirun over seeds into mean ± std tables and plots."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from ltrain.cli.common import CONFIG_PATH, exit_on_user_error


@hydra.main(config_path=CONFIG_PATH, config_name="report", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    from ltrain.report import write_report

    out = write_report(
        cfg.dir, metric=cfg.metric, out_dir=cfg.out, title=cfg.title, metrics=list(cfg.metrics) if cfg.metrics else None
    )
    print(out["markdown"])
    if out["plot"]:
        print(f"plot: {out['plot']}")


if __name__ == "__main__":
    main()
