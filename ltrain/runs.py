"""Rebuild a finished run in a notebook: its config, data module and model with the best weights."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from ltrain.errors import LtrainError
from ltrain.train import build_datamodule, build_module


def from_run(run_dir: str | Path, checkpoint: str = "best"):
    """(module, datamodule, cfg) of the run in ``run_dir``, the module holding ``checkpoint``'s weights.

    ``checkpoint`` is "best" or "last". Weights load with ``weights_only=True`` (no pickle).
    """

    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    ckpt = run_dir / "checkpoints" / f"{checkpoint}.ckpt"
    if not cfg_path.is_file():
        raise LtrainError(f"{run_dir} is not an ltrain run directory (no config.yaml)")
    if not ckpt.is_file():
        raise LtrainError(f"{run_dir} has no checkpoints/{checkpoint}.ckpt (did the run finish an epoch?)")
    cfg: DictConfig = OmegaConf.load(cfg_path)
    with open_dict(cfg):
        if "pretrained" in cfg.data:  # a streamed folder serves what the starting weights (a zoo entry) expect
            cfg.data.pretrained = cfg.model.pretrained
        cfg.model.pretrained = None  # the checkpoint holds the trained weights
    dm = build_datamodule(cfg)
    module = build_module(cfg, dm)
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    except Exception as e:
        raise LtrainError(
            f"cannot read {ckpt}: {e}. The file is corrupt or truncated; use checkpoint='last' or rerun the training"
        ) from e
    module.load_state_dict(state)
    module.eval()
    return module, dm, cfg
