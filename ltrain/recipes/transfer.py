"""Transfer recipes (``mnist_transfer``, ``fashion_transfer``, ``imagenet_fashion``): model A -> zoo -> model B.

The book's recipe for reusing pretrained layers, run end to end:

1. train model A on the source task (``recipe.source`` overrides the main config, e.g. digits 0-4) and
   push it to the zoo as ``zoo.push`` or ``<recipe>_a_s<seed>`` (a taken name fails before any training) — or, with ``recipe.source: null``, take the weights
   ``recipe.pretrained`` names (e.g. ``imagenet_lite0``, a public zoo model);
2. train every arm of ``recipe.arms`` on the target task (``recipe.target`` overrides, e.g. digits 5-9
   with 100 images per digit): arms with ``pretrained: true`` start from A's weights with their own
   freeze schedule, the others from random weights. All arms see the same labelled images and are
   tested on the same held-out images; checkpoints are chosen on validation accuracy, never on test.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from ltrain.publish import check_push, recipe_entry_name
from ltrain.recipes.arms import epoch_curves, plot_curves
from ltrain.train import train


def merged(cfg: DictConfig, overrides: DictConfig | None) -> DictConfig:
    """A copy of ``cfg`` with ``overrides`` merged in and no recipe (a plain training config)."""
    out = copy.deepcopy(cfg)
    with open_dict(out):
        if overrides:
            out.merge_with(overrides)
        out.recipe = None
        out.zoo.push = None
    return out


def zoo_name(cfg: DictConfig) -> str:
    """Model A's entry: ``zoo.push`` if given, else ``<recipe>_a_s<seed>`` (``_2``, ``_3``… on reruns)."""
    return recipe_entry_name(cfg, f"{cfg.recipe.name}_a_s{cfg.seed}")


def train_source(cfg: DictConfig, run_dir: Path) -> tuple[str, dict[str, float]]:
    """Train model A on the source task and push it to the zoo; (weights source, A's metrics)."""

    name = zoo_name(cfg)
    src = merged(cfg, cfg.recipe.source)
    with open_dict(src):
        src.freeze = None
        src.zoo.push = name  # zoo.overwrite stays the user's: a rerun does not replace A without being asked
        src.zoo.description = f"model A of recipe {cfg.recipe.name}, seed {cfg.seed}"
    res = train(src, run_dir / "source")
    return f"zoo:{name}", {
        "test_acc": float(res.results["test_acc"]),
        "best_val_acc": float(res.results["best_val_acc"]),
    }


def run(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Model A (trained or public), then each arm on the target task; per-arm test accuracy."""

    run_dir = Path(run_dir)
    out: dict[str, Any] = {}
    if cfg.recipe.get("source") is not None:
        check_push(cfg, zoo_name(cfg), by=f"recipe={cfg.recipe.name}")  # a taken name fails now, not after A
        weights, out["source"] = train_source(cfg, run_dir)
        out["zoo_entry"] = weights.removeprefix("zoo:")
    else:
        weights = str(cfg.recipe.pretrained)
    arms: dict[str, dict[str, float]] = {}
    for arm_name, arm in cfg.recipe.arms.items():
        arm_cfg = merged(cfg, cfg.recipe.target)
        with open_dict(arm_cfg):
            arm_cfg.model.pretrained = weights if arm.get("pretrained") else None
            if arm.get("pretrained"):  # the book: replace the output layer (even when the class count matches)
                arm_cfg.model.surgery.reset_head = True
            arm_cfg.freeze = arm.get("freeze")
            if arm.get("overrides"):
                arm_cfg.merge_with(arm.overrides)
        res = train(arm_cfg, run_dir / arm_name)
        arms[arm_name] = {
            "test_acc": float(res.results["test_acc"]),
            "best_val_acc": float(res.results["best_val_acc"]),
            "epochs": res.results["epochs"],
        }
    out["arms"] = arms
    curves = {arm: epoch_curves(run_dir / arm) for arm in arms}  # did every arm stop on a plateau, not a cap?
    plot_curves(curves, run_dir / "curves.png", f"{cfg.recipe.name}: every arm, seed {cfg.seed}")
    out["plots"] = sorted(str(p) for p in run_dir.glob("*/learning_curves.png"))
    return out
