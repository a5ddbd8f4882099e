"""Recipe ``cifar10_deep``: the chapter's exercise of training a deep (20 x 100) dense net on CIFAR-10.

Arms, in the book's order: He + ELU with Nadam and early stopping; the same with batch norm; SELU
self-normalising (LeCun normal, standardised inputs, no BN); + alpha dropout, also evaluated with
MC dropout (``ltrain.inference.mc_dropout``, T passes with dropout on); then the same net trained with
1cycle. Each arm is a plain ``train`` run of the recipe's config with a few keys changed
(``recipe.arms``). CIFAR-10 needs a download; the smoke variant in the tests runs on the embedded digits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ltrain.inference import MCSettings, mc_dropout
from ltrain.recipes.arms import arm_config, epoch_curves, plot_curves
from ltrain.train import train


def mc_test_accuracy(model: torch.nn.Module, dm, samples: int, seed: int, limit: int | None, batch_size: int) -> float:
    """Test accuracy of the MC-dropout mean prediction (T = ``samples``) on the first ``limit`` test images."""

    ds = dm.splits["test"]
    n = len(ds) if limit is None else min(limit, len(ds))
    correct, mc = 0, MCSettings(seed=seed)
    for b, start in enumerate(range(0, n, batch_size)):
        xs, ys = zip(*(ds[i] for i in range(start, min(start + batch_size, n))), strict=True)
        pred = mc_dropout(model, torch.stack(xs), samples=samples, seed=mc.batch_seed(b))
        correct += (pred.mean.argmax(-1) == torch.stack(ys)).sum().item()
    return correct / n


def run(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train every arm; add the MC-dropout accuracy to the arms whose net has dropout."""

    run_dir = Path(run_dir)
    r = cfg.recipe
    arms, curves = {}, {}
    for name, settings in OmegaConf.to_container(r.arms, resolve=False).items():
        arm_cfg = arm_config(cfg, {"model.hidden": [int(r.width)] * int(r.depth), **settings})
        trained = train(arm_cfg, run_dir / name)
        curves[name] = epoch_curves(run_dir / name)
        arms[name] = {
            "test_acc": trained.results["test_acc"],
            "epochs": trained.results["epochs"],
            "fit_seconds": trained.results["fit_seconds"],
            "best_val_acc": trained.results["best_val_acc"],
        }
        if arm_cfg.model.dropout > 0:
            arms[name]["test_acc_mc"] = mc_test_accuracy(
                trained.module.model,
                trained.datamodule,
                r.mc_samples,
                cfg.seed,
                r.get("test_limit"),
                cfg.data.eval_batch_size,
            )
    if cfg.get("plots", True):
        plot_curves(curves, run_dir / "cifar10_deep.png", f"{r.depth} x {r.width} dense net, seed {cfg.seed}")
    table = ["| arm | epochs | best val acc | test acc | test acc (MC dropout) |", "|---|---|---|---|---|"]
    for n, a in arms.items():
        mc = f"{a['test_acc_mc']:.4f}" if "test_acc_mc" in a else "-"
        table.append(f"| {n} | {a['epochs']} | {a['best_val_acc']:.4f} | {a['test_acc']:.4f} | {mc} |")
    (run_dir / "cifar10_deep.md").write_text("\n".join(table) + "\n")
    return {"recipe": "cifar10_deep", "arms": arms, "curves": curves}
