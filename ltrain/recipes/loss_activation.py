"""Recipe ``loss_activation``: how the loss and the hidden activation change the speed of training.

Every arm trains the same MLP (512-256-128-64, Adam, batch 256, 10 epochs) with one change: MSE on
softmax probabilities instead of cross-entropy, or a different hidden activation. The chapter's
claims: MSE trains slower than cross-entropy; sigmoid slower than tanh, softsign, ReLU and ELU. The
scalars per arm (test accuracy, validation accuracy after the first epoch and at the end) go to
results.json for ``ltrain-report``; the per-epoch curves to a plot and ``results.json["curves"]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ltrain.recipes.arms import arm_config, epoch_curves, plot_curves
from ltrain.train import train


def run(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train every arm of ``recipe.arms``; return their scalars and curves."""

    run_dir = Path(run_dir)
    arms, curves = {}, {}
    for name, settings in OmegaConf.to_container(cfg.recipe.arms, resolve=True).items():
        trained = train(arm_config(cfg, settings), run_dir / name)
        curves[name] = epoch_curves(run_dir / name)
        val_acc = curves[name]["val_acc"]
        arms[name] = {
            "test_acc": trained.results["test_acc"],
            "val_acc_epoch1": val_acc[0] if val_acc else None,
            "val_acc_last": val_acc[-1] if val_acc else None,
            "fit_seconds": trained.results["fit_seconds"],
        }
    if cfg.get("plots", True):
        plot_curves(curves, run_dir / "loss_activation.png", f"MLP {list(cfg.model.hidden)}, seed {cfg.seed}")
    table = ["| arm | val acc after epoch 1 | val acc at the end | test acc |", "|---|---|---|---|"]
    table += [
        f"| {n} | {a['val_acc_epoch1']:.4f} | {a['val_acc_last']:.4f} | {a['test_acc']:.4f} |" for n, a in arms.items()
    ]
    (run_dir / "loss_activation.md").write_text("\n".join(table) + "\n")
    return {"recipe": "loss_activation", "arms": arms, "curves": curves}
