"""Recipe ``init_depth``: the lecture's picture of activations through 10 tanh layers of 500.

Weights of std 0.01 shrink the signal by ~sqrt(500)*0.01 = 0.22 per layer (the last layer's outputs
collapse to zero, and so do the gradients); std 1.0 multiplies it by ~22 and every tanh saturates at
+-1 (zero gradients again); Xavier (Glorot) keeps a spread. With ReLU, Xavier halves the variance
per layer, hence He (twice the variance). One forward pass of ``build_mlp`` on random inputs, the
statistics read by ``ActivationRecorder`` (the forward hooks of ``TrainingDiagnostics``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ltrain.callbacks.diagnostics import ActivationRecorder
from ltrain.models import build_mlp


def arm_init(arm: dict[str, Any], width: int) -> Any:
    """The init of an arm: a named scheme, or N(0, weight_std^2) written as variance scaling
    (sigma^2 = scale / fan_in, so scale = weight_std^2 * fan_in)."""
    if "weight_std" in arm:
        return {"scale": float(arm["weight_std"]) ** 2 * width, "mode": "fan_in", "distribution": "normal"}
    return arm["init"]


@torch.no_grad()
def layer_stats(
    activation: str, init: Any, layers: int, width: int, x: torch.Tensor, saturation: float
) -> dict[str, list[float]]:
    """Per hidden layer: the std of its activations and the fraction beyond |saturation|."""
    net = build_mlp(width, 10, hidden=[width] * layers, activation=activation, init=init)
    names = [f"hidden{i}.act" for i in range(layers)]
    outputs: dict[str, torch.Tensor] = {}
    hooks = [
        net.get_submodule(n).register_forward_hook(lambda m, a, out, n=n: outputs.__setitem__(n, out)) for n in names
    ]
    with ActivationRecorder(net) as rec:
        net(x)
    for h in hooks:
        h.remove()
    return {
        "std": [rec.stats[n]["std"] for n in names],
        "saturated": [(outputs[n].abs() > saturation).float().mean().item() for n in names],
    }


def summarise(stats: dict[str, list[float]]) -> dict[str, float]:
    std = stats["std"]
    return {
        "std_first": std[0],
        "std_last": std[-1],
        "last_over_first": std[-1] / std[0],
        "max_over_min_std": max(std) / max(min(std), 1e-30),
        "saturated_mean": sum(stats["saturated"]) / len(std),
        "saturated_last": stats["saturated"][-1],
    }


def run(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """One forward pass per arm; figures, a markdown table and the per-arm numbers."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    r = cfg.recipe
    arms = OmegaConf.to_container(r.arms, resolve=True)
    per_layer = {}
    for name, arm in arms.items():
        torch.manual_seed(cfg.seed)
        x = torch.randn(r.examples, r.width)
        per_layer[name] = layer_stats(arm["activation"], arm_init(arm, r.width), r.layers, r.width, x, r.saturation)
    summary = {name: summarise(s) for name, s in per_layer.items()}
    for name, arm in arms.items():  # saturation means something for a bounded activation only
        if arm["activation"] != "tanh":
            del summary[name]["saturated_mean"], summary[name]["saturated_last"]
    if cfg.get("plots", True):
        plot(per_layer, run_dir / "init_depth.png", r.saturation)
    table = markdown_table(summary)
    (run_dir / "init_depth.md").write_text(table)
    print(table)
    return {"recipe": "init_depth", "arms": summary, "per_layer": per_layer}


def markdown_table(summary: dict[str, dict[str, float]]) -> str:
    lines = [
        "| arm | std layer 1 | std layer L | last/first | max/min std | saturated (mean) |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        lines.append(
            f"| {name} | {s['std_first']:.4g} | {s['std_last']:.3g} | {s['last_over_first']:.3g} | "
            f"{s['max_over_min_std']:.3g} | {format(s['saturated_mean'], '.1%') if 'saturated_mean' in s else '-'} |"
        )
    return "\n".join(lines) + "\n"


def plot(per_layer: dict[str, dict[str, list[float]]], out_png: Path, saturation: float) -> None:
    from matplotlib.figure import Figure  # no pyplot: drawing to a file must not switch the user's backend

    fig = Figure(figsize=(12, 4.5))
    (ax_std, ax_sat) = fig.subplots(1, 2)
    for name, s in per_layer.items():
        layers = range(1, len(s["std"]) + 1)
        ax_std.plot(layers, [max(v, 1e-12) for v in s["std"]], marker="o", label=name)
        if name.startswith("tanh"):
            ax_sat.plot(layers, s["saturated"], marker="o", label=name)
    ax_std.set_yscale("log")
    ax_std.set_title("activation std per layer")
    ax_sat.set_title(f"fraction of tanh outputs beyond |{saturation}|")
    for ax in (ax_std, ax_sat):
        ax.set_xlabel("hidden layer")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
