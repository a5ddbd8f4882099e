"""``imagenet_fashion_files``: the transfer recipe on image files, written once where ``data.root`` points.

A dataset is written out as an image folder (``recipe.write``: its ``source`` DataModule and
:func:`~ltrain.data.write_image_folder`'s options) unless ``data.root`` already holds it, then
:func:`ltrain.recipes.transfer.run` trains every arm from that folder through ``data=image_folder``. The write is
atomic (a temporary folder renamed into place), so the jobs of one sweep may start together.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ltrain.data import ensure_image_folder
from ltrain.recipes import transfer

log = logging.getLogger(__name__)


def write_folder(cfg: DictConfig) -> tuple[Path, bool]:
    """``data.root``, written from ``recipe.write`` if missing; (root, whether this call wrote it)."""
    root = Path(str(cfg.data.root)).expanduser()
    options: dict[str, Any] = OmegaConf.to_container(cfg.recipe.write, resolve=True)  # type: ignore[assignment]
    source = instantiate(options.pop("source"))
    return root, ensure_image_folder(source, root, **options)


def run(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """The image folder (written on first use), then the transfer recipe's arms trained from it."""
    root, written = write_folder(cfg)
    log.info("%s %s", "wrote the image folder" if written else "using the image folder", root)
    out = transfer.run(cfg, run_dir)
    out["folder"] = str(root)
    return out
