"""Recipes: the experiments of the chapter and lectures, each a config (``conf/recipe/NAME.yaml``) and a runner.

A recipe config is ``# @package _global_`` and sets ``recipe.runner`` to a function
``run(cfg, run_dir) -> dict``. The runner trains its arms (e.g. scratch vs transfer) and returns
``{"arms": {arm: {metric: value}}, ...}``; the CLI writes that to ``results.json`` so that
``ltrain -m recipe=NAME seed=0,1,2,3,4`` followed by ``ltrain-report`` gives mean ± std per arm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.utils import get_method
from omegaconf import DictConfig

from ltrain.errors import LtrainError
from ltrain.io import atomic_write_json
from ltrain.train import hardware


def recipe_runner(cfg: DictConfig):
    """The recipe's ``run`` function, or None when the config names no runner (a plain training run)."""
    recipe = cfg.get("recipe")
    if not recipe or not recipe.get("runner"):
        return None
    try:
        return get_method(recipe.runner)
    except Exception as e:
        raise LtrainError(f"recipe.runner={recipe.runner!r} cannot be imported: {e}") from e


def run_recipe(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Run the recipe the config names and write its results.json (seed and hardware added)."""

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    runner = recipe_runner(cfg)
    if runner is None:
        raise LtrainError("this config names no recipe runner (recipe.runner)")
    results = dict(runner(cfg, run_dir))
    results.setdefault("recipe", cfg.recipe.get("name", str(cfg.recipe.runner)))
    results.setdefault("seed", cfg.seed)
    results.setdefault("hardware", hardware())
    atomic_write_json(run_dir / "results.json", results)
    return results
