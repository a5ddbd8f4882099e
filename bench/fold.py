"""BN folding, side by side in one run: ltrain's fold_batchnorm vs torch.fx's fuse(), latency, and ONNX Runtime.

    python bench/fold.py                       # everything (writes bench/results/fold.md)
    python bench/fold.py --skip-onnx --models resnet18,mixnet_s

1. Every model of bench/fold_models.txt (random BN statistics, so a wrong fold would show): BatchNorm layers,
   those that directly follow a conv/linear, folded by ltrain, folded by torch.fx.experimental.optimization.fuse
   (or "cannot trace"), and ltrain's max output difference relative to the output scale.
2. Eager CPU latency unfolded vs folded at batch 1 and 32 (resnet50, efficientnet_b0, mobilenetv3_large_100):
   interleaved rounds, median, so machine load hits both sides alike.
3. The same three models exported to ONNX (torch's default exporter) unfolded and folded: file size,
   BatchNormalization nodes, max difference to PyTorch, and ONNX Runtime latency with all graph optimisations
   and with none (ORT fuses Conv+BN itself from its basic level on).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import timm
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from ltrain.export import fold_batchnorm
from ltrain.export.latency import interleaved_latency
from ltrain.export.stats import randomize_batchnorm_

HERE = Path(__file__).resolve().parent
LATENCY_MODELS = ["resnet50", "efficientnet_b0", "mobilenetv3_large_100"]
NEEDS_LARGER_INPUT = {"inception_v3": 96}  # its stem's valid convs need at least 75x75


def read_models(path: Path) -> list[str]:
    names = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return [n for n in names if n]


def fx_fuse_folded(model: torch.nn.Module) -> int | None:
    """BN modules torch.fx's fuse() folds away (None when symbolic tracing fails)."""
    from torch.fx import symbolic_trace
    from torch.fx.experimental.optimization import fuse

    def bn_calls(gm) -> int:
        mods = dict(gm.named_modules())
        return sum(n.op == "call_module" and isinstance(mods.get(n.target), _BatchNorm) for n in gm.graph.nodes)

    try:
        traced = symbolic_trace(copy.deepcopy(model))
        fused = fuse(model, inplace=False)
    except Exception:
        return None
    # A BN module traced as a call keeps its node unless fused; one traced into F.batch_norm never fuses.
    return bn_calls(traced) - bn_calls(fused)


def fold_table(models: list[str], size: int) -> list[dict]:
    rows = []
    for name in models:
        start = time.perf_counter()
        model = randomize_batchnorm_(timm.create_model(name, pretrained=False), seed=0).eval()
        side = NEEDS_LARGER_INPUT.get(name, size)
        x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0))
        _, report = fold_batchnorm(model, x)
        fx = fx_fuse_folded(model)
        row = {
            "model": name,
            "bn": report.total,
            "follows": report.follows_layer,
            "ltrain": len(report.folded),
            "ltrain_follows": report.folded_following_layer,
            "fx": fx,
            "rel_diff": report.rel_diff,
            "left": report.skipped,
            "seconds": time.perf_counter() - start,
        }
        rows.append(row)
        print(
            f"{name:24s} BN {row['bn']:4d}  follow a layer {row['follows']:4d}  ltrain {row['ltrain']:4d}  "
            f"fx.fuse {'cannot trace' if fx is None else fx:>12}  rel diff {row['rel_diff']:.2e}  "
            f"({row['seconds']:.0f} s)",
            flush=True,
        )
    return rows


def latency_table(models: list[str], batches: list[int], repeats: dict[int, int]) -> list[dict]:
    rows = []
    for name in models:
        model = randomize_batchnorm_(timm.create_model(name, pretrained=False), seed=0).eval()
        size = timm.create_model(name).pretrained_cfg["input_size"][1:]
        folded, _ = fold_batchnorm(model, torch.randn(1, 3, *size))
        for batch in batches:
            x = torch.randn(batch, 3, *size)
            with torch.inference_mode():
                t = interleaved_latency(
                    {"unfolded": lambda m=model, x=x: m(x), "folded": lambda f=folded, x=x: f(x)},
                    repeats=repeats[batch],
                    warmup=1,
                )
            rows.append({"model": name, "batch": batch, **t, "speedup": t["unfolded"] / t["folded"]})
            print(
                f"{name:24s} batch {batch:3d}  unfolded {t['unfolded'] * 1e3:8.1f} ms  folded "
                f"{t['folded'] * 1e3:8.1f} ms  speedup x{t['unfolded'] / t['folded']:.2f}",
                flush=True,
            )
    return rows


def onnx_table(models: list[str], batches: list[int], repeats: dict[int, int], threads: int) -> list[dict]:
    from ltrain.export.onnx import export_onnx, onnx_op_counts, ort_max_diff, ort_session

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            model = randomize_batchnorm_(timm.create_model(name, pretrained=False), seed=0).eval()
            size = model.pretrained_cfg["input_size"][1:]
            x1 = torch.randn(1, 3, *size)
            folded, _ = fold_batchnorm(model, x1)
            files = {
                tag: export_onnx(m, x1, Path(tmp) / f"{name}_{tag}.onnx")
                for tag, m in (("unfolded", model), ("folded", folded))
            }
            check = torch.randn(2, 3, *size)
            info = {
                tag: {
                    "bytes": p.stat().st_size,
                    "bn_nodes": onnx_op_counts(p).get("BatchNormalization", 0),
                    "max_diff": ort_max_diff(p, m, check)[0],
                }
                for (tag, p), m in zip(files.items(), (model, folded), strict=True)
            }
            for batch in batches:
                feed = {"input": torch.randn(batch, 3, *size).numpy()}
                sessions = {
                    f"{tag} ORT {level}": ort_session(p, level, threads)
                    for level in ("all", "disable")
                    for tag, p in files.items()
                }
                t = interleaved_latency(
                    {k: (lambda s=s, feed=feed: s.run(None, feed)) for k, s in sessions.items()},
                    repeats=repeats[batch],
                    warmup=1,
                )
                rows.append({"model": name, "batch": batch, "info": info, "latency": t})
                print(
                    f"{name:24s} batch {batch:3d}  " + "  ".join(f"{k} {v * 1e3:.1f} ms" for k, v in t.items()),
                    flush=True,
                )
            print(
                f"{name:24s} "
                + "  ".join(
                    f"{tag}: {v['bytes'] / 1e6:.2f} MB, {v['bn_nodes']} BN nodes, max diff {v['max_diff']:.1e}"
                    for tag, v in info.items()
                ),
                flush=True,
            )
    return rows


def provenance() -> str:
    return (
        f"Generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC by `{' '.join(['python', *sys.argv])}` on "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} thread(s), ONNX Runtime too), timm {timm.__version__}. Random BN statistics "
        "(seed 0). Timings interleave unfolded and folded rounds and report medians.\n"
    )


def markdown_sections(fold_rows, lat_rows, onnx_rows, args) -> dict[str, str]:
    """One markdown block per part that ran, each with its own provenance line."""
    sections = {}
    if fold_rows:
        out = []
        total = {k: sum(r[k] for r in fold_rows) for k in ("bn", "follows", "ltrain", "ltrain_follows")}
        fx_total = sum(r["fx"] or 0 for r in fold_rows)
        untraceable = [r["model"] for r in fold_rows if r["fx"] is None]
        out += [
            f"### BatchNorm layers folded on {len(fold_rows)} timm models (input {args.size}x{args.size}; "
            f"inception_v3 96x96)",
            "",
            "| model | BN layers | follow a conv/linear | folded by ltrain | folded by torch.fx fuse() | ltrain max rel. diff |",
            "|---|---:|---:|---:|---:|---:|",
            *[
                f"| {r['model']} | {r['bn']} | {r['follows']} | {r['ltrain']} | "
                f"{'cannot trace' if r['fx'] is None else r['fx']} | {r['rel_diff']:.1e} |"
                for r in fold_rows
            ],
            f"| **total** | **{total['bn']}** | **{total['follows']}** | **{total['ltrain']}** "
            f"({100 * total['ltrain'] / max(total['bn'], 1):.0f}%) | **{fx_total}** "
            f"({100 * fx_total / max(total['bn'], 1):.0f}%) | |",
            "",
            f"ltrain folded {total['ltrain_follows']} of the {total['follows']} BN layers that directly follow a "
            f"conv/linear layer ({100 * total['ltrain_follows'] / max(total['follows'], 1):.1f}%); torch.fx cannot "
            f"trace {len(untraceable)} model(s){': ' + ', '.join(untraceable) if untraceable else ''}. "
            "The BN layers ltrain leaves (pre-activation BN after a sum or concat, RepVGG identity branches) "
            "are listed with reasons by `ltrain-export`.",
            "",
        ]
        sections["fold"] = out
    if lat_rows:
        sections["latency"] = [
            "### Eager PyTorch CPU latency, unfolded vs folded",
            "",
            "| model | batch | unfolded ms | folded ms | speed-up |",
            "|---|---:|---:|---:|---:|",
            *[
                f"| {r['model']} | {r['batch']} | {r['unfolded'] * 1e3:.1f} | {r['folded'] * 1e3:.1f} | "
                f"x{r['speedup']:.2f} |"
                for r in lat_rows
            ],
            "",
        ]
    if onnx_rows:
        out = [
            "### After ONNX export (torch.onnx.export, dynamo) in ONNX Runtime (CPU)",
            "",
            "| model | batch | file MB unfolded / folded | BN nodes unfolded / folded | ORT all-opt ms unfolded / folded "
            "| ORT no-opt ms unfolded / folded | max diff vs PyTorch (folded) |",
            "|---|---:|---|---|---|---|---:|",
        ]
        for r in onnx_rows:
            i, t = r["info"], r["latency"]
            out.append(
                f"| {r['model']} | {r['batch']} | {i['unfolded']['bytes'] / 1e6:.2f} / {i['folded']['bytes'] / 1e6:.2f} | "
                f"{i['unfolded']['bn_nodes']} / {i['folded']['bn_nodes']} | "
                f"{t['unfolded ORT all'] * 1e3:.1f} / {t['folded ORT all'] * 1e3:.1f} | "
                f"{t['unfolded ORT disable'] * 1e3:.1f} / {t['folded ORT disable'] * 1e3:.1f} | "
                f"{i['folded']['max_diff']:.1e} |"
            )
        out.append("")
        sections["onnx"] = out
    return {k: provenance() + "\n" + "\n".join(v) for k, v in sections.items()}


def merge_sections(path: Path, sections: dict[str, str]) -> str:
    """The results file with this run's sections replaced and the others kept as an earlier run wrote them."""
    old = path.read_text() if path.is_file() else ""
    kept = dict(re.findall(r"<!-- section:(\w+) -->\n(.*?)<!-- /section:\1 -->\n", old, re.S))
    kept.update(sections)
    blocks = [
        f"<!-- section:{k} -->\n{kept[k]}<!-- /section:{k} -->\n" for k in ("fold", "latency", "onnx") if k in kept
    ]
    return "<!-- generated by bench/fold.py: do not edit by hand -->\n" + "\n".join(blocks)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=str(HERE / "fold_models.txt"), help="a list file, or comma-separated names")
    p.add_argument("--size", type=int, default=64, help="input size for the fold table (latency uses 224)")
    p.add_argument("--latency-models", default=",".join(LATENCY_MODELS))
    p.add_argument("--batches", default="1,32")
    p.add_argument("--repeats", default="15,5", help="interleaved rounds per batch size")
    p.add_argument("--skip-fold", action="store_true")
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--skip-onnx", action="store_true")
    p.add_argument(
        "--threads", type=int, default=1, help="torch and ONNX Runtime threads (1: steadier on a shared machine)"
    )
    p.add_argument("--out", default=str(HERE / "results" / "fold.md"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    models = read_models(Path(args.models)) if Path(args.models).is_file() else args.models.split(",")
    lat_models = [m for m in args.latency_models.split(",") if m]
    batches = [int(b) for b in args.batches.split(",")]
    repeats = dict(zip(batches, (int(r) for r in args.repeats.split(",")), strict=True))

    fold_rows = [] if args.skip_fold else fold_table(models, args.size)
    lat_rows = [] if args.skip_latency else latency_table(lat_models, batches, repeats)
    onnx_rows = [] if args.skip_onnx else onnx_table(lat_models, batches, repeats, args.threads)
    out = Path(args.out)
    text = merge_sections(out, markdown_sections(fold_rows, lat_rows, onnx_rows, args))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print("\n" + text)
    print(f"wrote {args.out}")
    slower = [r for r in lat_rows if r["folded"] > r["unfolded"]]
    if slower:
        print("folded slower than unfolded:", [(r["model"], r["batch"]) for r in slower])


if __name__ == "__main__":
    main()
