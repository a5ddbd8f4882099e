"""What ``ltrain-export`` does, as plain functions: load a model, fold its BatchNorm, export, check, time, report.

``export_model(model, example_input, out_dir)`` works on any network (the ``low_latency`` preset or a user's
script can call it after training); ``export(cfg, out_dir)`` first loads the model the config names: a timm
architecture, a zoo entry (``zoo:NAME``) or a checkpoint file.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ltrain import zoo
from ltrain.errors import LtrainError
from ltrain.export.fold import fold_batchnorm
from ltrain.export.latency import interleaved_latency
from ltrain.export.lowp import QUANTIZE, output_change, quantize_int8, zero_small_weights
from ltrain.export.onnx import (
    export_onnx,
    onnx_op_counts,
    ort_max_diff,
    ort_outputs,
    ort_session,
    torch_export_batch_norms,
)
from ltrain.io import atomic_write_json
from ltrain.models.factory import build_model
from ltrain.models.pretrained import classifier_keys, load_checked, read_weights_file


def export(cfg: DictConfig, out_dir: str | Path) -> dict[str, Any]:
    """Load ``cfg.source``, then :func:`export_model` it into ``out_dir`` with the config's options."""
    model, input_shape, origin = load_source(cfg)
    size = tuple(cfg.input_size) if cfg.get("input_size") else tuple(input_shape[1:])
    gen = torch.Generator().manual_seed(int(cfg.seed))
    example = torch.randn(1, input_shape[0], *size, generator=gen)
    with staged(out_dir) as stage:  # export.json is written, and published last, only once every check passed
        results = _export_into(stage, model, example, cfg)
        results["source"] = origin
        atomic_write_json(stage / "export.json", _relocated(results, stage, Path(out_dir)))
    return _relocated(results, stage, Path(out_dir))


def _export_into(stage: Path, model: nn.Module, example: torch.Tensor, cfg: DictConfig) -> dict[str, Any]:
    return export_model(
        model,
        example,
        stage,
        fold=cfg.fold,
        unfoldable=cfg.unfoldable,
        tolerance=cfg.tolerance,
        onnx=cfg.onnx.enabled,
        dynamo=cfg.onnx.dynamo,
        opset=cfg.onnx.opset,
        ort_level=cfg.onnx.ort_level,
        compare_unfolded=cfg.compare_unfolded,
        torch_export=cfg.torch_export,
        sparsify=cfg.sparsify,
        quantize=cfg.quantize,
        latency_batches=list(cfg.latency.batch_sizes),
        latency_repeats=cfg.latency.repeats,
        latency_warmup=cfg.latency.warmup,
    )


def load_source(cfg: DictConfig) -> tuple[nn.Module, tuple[int, int, int], str]:
    """(model in eval mode, its input shape (C, H, W), where it came from) for ``cfg.source``."""

    source = str(cfg.source)
    if source.startswith("zoo:"):
        name = source[len("zoo:") :]
        entry = zoo.Zoo().get(name)
        return zoo.load_model(name), tuple(entry.input_shape), source
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    if _is_path(source):
        path, run_model_cfg, run_shape = _from_run_dir(Path(source).expanduser())
        model, shape = _load_checkpoint(cfg, run_model_cfg or model_cfg, path, run_shape)
        return model, shape, source
    model_cfg["name"] = source
    shape = _input_shape(model_cfg["name"], cfg)
    model = build_model(model_cfg, int(cfg.num_classes or 1000), shape)
    return (
        model.eval(),
        shape,
        f"{source} ({'weights: ' + str(model_cfg['pretrained']) if model_cfg.get('pretrained') else 'random weights'})",
    )


def _is_path(source: str) -> bool:
    return any(sep in source for sep in ("/", "\\")) or Path(source).suffix in (".ckpt", ".safetensors", ".pt", ".pth")


def _input_shape(name: str, cfg: DictConfig) -> tuple[int, int, int]:
    import timm

    size = (224, 224)
    if name != "mlp":
        size = tuple(timm.get_pretrained_cfg(name.split(".", 1)[0]).input_size[1:]) if timm.is_model(name) else size
    return (int(cfg.in_chans), *size)


def _from_run_dir(path: Path) -> tuple[Path, dict | None, tuple[int, int, int] | None]:
    """For an ``ltrain`` run directory (or a checkpoint inside one): its best checkpoint, model config and input shape.

    ``ltrain`` writes ``config.yaml`` (and Hydra's record ``.hydra/config.yaml``) and ``results.json`` (with
    ``input_shape``) into every run directory, so ``ltrain-export source=<run dir>`` rebuilds the trained network
    without repeating its options.
    """
    run = path if path.is_dir() else path.parent.parent
    config, results = run / "config.yaml", run / "results.json"
    if not config.is_file():
        config = run / ".hydra" / "config.yaml"
    if not config.is_file():
        return path, None, None
    if path.is_dir():
        path = path / "checkpoints" / "best.ckpt"
    model_cfg = OmegaConf.to_container(OmegaConf.load(config).model, resolve=True)
    shape = tuple(json.loads(results.read_text())["input_shape"]) if results.is_file() else None
    return path, model_cfg, shape


def _load_checkpoint(
    cfg: DictConfig, model_cfg: dict, path: Path, shape: tuple[int, int, int] | None = None
) -> tuple[nn.Module, tuple[int, int, int]]:
    """The architecture with the checkpoint's weights; the classes come from its classifier."""

    state = read_weights_file(path)
    shape = shape or _input_shape(model_cfg["name"], cfg)
    probe = build_model({**model_cfg, "pretrained": None}, 1000, shape)
    heads = [f"{k}.weight" for k in classifier_keys(probe) if f"{k}.weight" in state]
    num_classes = int(cfg.num_classes or (state[heads[0]].shape[0] if heads else 1000))
    model = build_model({**model_cfg, "pretrained": None}, num_classes, shape)
    skipped = load_checked(model, state, origin=str(path))
    if skipped:
        raise LtrainError(
            f"{path}: its classifier does not fit model.name={model_cfg['name']} with num_classes={num_classes} "
            f"(keys {skipped}).\n  Set num_classes= to the checkpoint's number of classes."
        )
    return model.eval(), shape


def export_model(
    model: nn.Module,
    example_input: torch.Tensor,
    out_dir: str | Path,
    *,
    fold: bool = True,
    unfoldable: str = "affine",
    tolerance: float = 1e-4,
    onnx: bool = True,
    dynamo: bool = True,
    opset: int | None = None,
    ort_level: str = "all",
    compare_unfolded: bool = True,
    torch_export: bool = False,
    sparsify: float = 0.0,
    quantize: str | None = None,
    latency_batches: list[int] = (1,),
    latency_repeats: int = 10,
    latency_warmup: int = 2,
) -> dict[str, Any]:
    """Fold (optionally), export to ONNX and check it in ONNX Runtime; time before/after; print and return a report.

    Raises if the folded model or the ONNX file differs from the original by more than ``tolerance`` times
    the output scale: an export that is not proven equal is not handed over. The two lossy options are
    reported instead: ``sparsify`` zeroes weights below that magnitude after folding, ``quantize="int8"``
    also writes ``model_int8.onnx`` (ONNX Runtime dynamic quantisation) and times it beside the float file.
    """

    if quantize not in QUANTIZE:
        raise LtrainError(f"quantize={quantize!r} is not one of {list(QUANTIZE)}")
    if quantize and not onnx:
        raise LtrainError("quantize=int8 quantises the ONNX file: keep onnx.enabled=true")
    with staged(out_dir) as stage:  # nothing appears in out_dir unless every check below passed
        results = _export_model(
            model,
            example_input,
            stage,
            fold=fold,
            unfoldable=unfoldable,
            tolerance=tolerance,
            onnx=onnx,
            dynamo=dynamo,
            opset=opset,
            ort_level=ort_level,
            compare_unfolded=compare_unfolded,
            torch_export=torch_export,
            sparsify=sparsify,
            quantize=quantize,
            latency_batches=latency_batches,
            latency_repeats=latency_repeats,
            latency_warmup=latency_warmup,
        )
    results = _relocated(results, stage, Path(out_dir))
    _print_summary(results)
    return results


def _export_model(
    model: nn.Module,
    example_input: torch.Tensor,
    out_dir: Path,
    *,
    fold: bool,
    unfoldable: str,
    tolerance: float,
    onnx: bool,
    dynamo: bool,
    opset: int | None,
    ort_level: str,
    compare_unfolded: bool,
    torch_export: bool,
    sparsify: float,
    quantize: str | None,
    latency_batches: list[int],
    latency_repeats: int,
    latency_warmup: int,
) -> dict[str, Any]:

    original = model.eval()
    results: dict[str, Any] = {"input_shape": list(example_input.shape[1:])}
    if fold:
        deployed, report = fold_batchnorm(original, example_input, unfoldable=unfoldable)
        results["fold"] = report.to_dict()
        print(report.summary())
        if not report.rel_diff <= tolerance:
            raise RuntimeError(
                f"folded model differs from the original by {report.rel_diff:.3g} (relative) > {tolerance}"
            )
    else:
        deployed = original
    lossy = bool(sparsify or quantize)  # their cost is measured on more inputs than the equality checks need
    check_input = torch.randn(
        32 if lossy else 2, *example_input.shape[1:], generator=torch.Generator().manual_seed(1)
    ).to(example_input)
    if sparsify:
        with torch.no_grad():
            before = deployed(check_input)
        deployed = copy.deepcopy(deployed) if deployed is original else deployed
        results["sparsify"] = zero_small_weights(deployed, sparsify)
        with torch.no_grad():
            results["sparsify"] |= output_change(before, deployed(check_input))
    variants = {"unfolded": original, "folded": deployed} if fold and compare_unfolded else {"model": deployed}
    eager = {}
    for batch in latency_batches:
        x = torch.randn(batch, *example_input.shape[1:]).to(example_input)
        with torch.inference_mode():
            t = interleaved_latency(
                {k: (lambda m=m, x=x: m(x)) for k, m in variants.items()}, latency_repeats, latency_warmup
            )
        eager[str(batch)] = {k: v * 1e3 for k, v in t.items()}
    results["eager_latency_ms"] = eager

    if onnx:
        results["onnx"] = _export_and_check(
            variants,
            example_input,
            check_input,
            out_dir,
            dynamo=dynamo,
            opset=opset,
            ort_level=ort_level,
            tolerance=tolerance,
            batches=latency_batches,
            repeats=latency_repeats,
            warmup=latency_warmup,
            quantize=quantize,
        )
    if torch_export:
        program = torch.export.export(deployed, (example_input,))
        torch.export.save(program, str(out_dir / "model.pt2"))
        results["torch_export"] = {
            "file": str(out_dir / "model.pt2"),
            "batch_norm_ops": torch_export_batch_norms(deployed, example_input),
        }
    return results


STAGING_PREFIX = ".export-"


@contextmanager
def staged(out_dir: str | Path) -> Iterator[Path]:
    """A temporary folder inside ``out_dir`` to export into; on success its files move into ``out_dir``.

    ``export.json``, when there is one, moves last: it is the commit point, so a kill at any moment leaves either
    the previous export or the whole new one. On failure (a check that did not pass, a kill) the new files stay
    out of ``out_dir``; folders left by killed exports are removed by the next export into the same place.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_dead_staging(out_dir)
    stage = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=out_dir))
    try:
        yield stage
        files = sorted((p for p in stage.iterdir() if p.is_file()), key=lambda p: p.name == "export.json")
        for path in files:
            os.replace(path, out_dir / path.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _remove_dead_staging(out_dir: Path) -> None:
    for stage in out_dir.glob(f"{STAGING_PREFIX}*"):
        try:
            os.kill(int(stage.name[len(STAGING_PREFIX) :].split("-")[0]), 0)
        except ProcessLookupError:
            shutil.rmtree(stage, ignore_errors=True)
        except (ValueError, PermissionError):
            continue


def _relocated(results: dict[str, Any], stage: Path, out_dir: Path) -> dict[str, Any]:
    """``results`` with the paths of staged files pointing where the files were moved."""
    return json.loads(json.dumps(results, default=str).replace(json.dumps(str(stage))[1:-1], str(out_dir)))


def _export_and_check(
    variants: dict[str, nn.Module],
    example: torch.Tensor,
    check: torch.Tensor,
    out_dir: Path,
    *,
    dynamo: bool,
    opset: int | None,
    ort_level: str,
    tolerance: float,
    batches: list[int],
    repeats: int,
    warmup: int,
    quantize: str | None = None,
) -> dict[str, Any]:

    files, info = {}, {}
    for tag, m in variants.items():
        path = out_dir / ("model.onnx" if tag in ("folded", "model") else f"model_{tag}.onnx")
        files[tag] = export_onnx(m, example, path, dynamo=dynamo, opset=opset)
        diff, scale = ort_max_diff(path, m, check, level=ort_level)
        counts = onnx_op_counts(path)
        info[tag] = {
            "file": str(path),
            "bytes": path.stat().st_size,
            "max_abs_diff": diff,
            "output_scale": scale,
            "batch_norm_nodes": counts.get("BatchNormalization", 0),
            "nodes": sum(counts.values()),
        }
        if not diff <= tolerance * max(scale, 1.0):
            raise RuntimeError(
                f"ONNX Runtime output of {path} differs from PyTorch by {diff:.3g} "
                f"(output scale {scale:.3g}, tolerance {tolerance} x max(scale, 1))"
            )
    if quantize == "int8":  # lossy: reported against the float file, not held to the tolerance
        float_tag = "folded" if "folded" in files else "model"
        path = quantize_int8(files[float_tag], out_dir / "model_int8.onnx")
        files["int8"] = path
        info["int8"] = {
            "file": str(path),
            "bytes": path.stat().st_size,
            "nodes": sum(onnx_op_counts(path).values()),
            **output_change(*(torch.from_numpy(ort_outputs(files[t], check, ort_level)) for t in (float_tag, "int8"))),
        }
    latency = {}
    for batch in batches:
        feed = torch.randn(batch, *example.shape[1:]).numpy()
        sessions = {tag: ort_session(p, ort_level) for tag, p in files.items()}
        t = interleaved_latency(
            {tag: (lambda s=s, feed=feed: s.run(None, {s.get_inputs()[0].name: feed})) for tag, s in sessions.items()},
            repeats,
            warmup,
        )
        latency[str(batch)] = {k: v * 1e3 for k, v in t.items()}
    return {"files": info, "ort_level": ort_level, "ort_latency_ms": latency}


def _print_summary(results: dict[str, Any]) -> None:
    for batch, t in results["eager_latency_ms"].items():
        print(f"PyTorch latency, batch {batch}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in t.items()))
    if "sparsify" in results:
        s = results["sparsify"]
        print(
            f"sparsify: {s['zeroed']} of {s['weights']} weights below {s['threshold']:g} set to 0 ({s['sparsity']:.1%}); "
            f"outputs moved by {s['max_rel_diff']:.2e} of their scale, top class changed on {s['top1_changed']:.1%}"
        )
    onnx = results.get("onnx")
    if onnx:
        for tag, i in onnx["files"].items():
            if tag == "int8":
                print(
                    f"ONNX int8: {i['file']} ({i['bytes'] / 1e6:.2f} MB), outputs moved by {i['max_rel_diff']:.2e} of "
                    f"their scale vs the float file, top class changed on {i['top1_changed']:.1%} of check inputs"
                )
                continue
            print(
                f"ONNX {tag}: {i['file']} ({i['bytes'] / 1e6:.2f} MB, {i['batch_norm_nodes']} BatchNormalization "
                f"nodes), max |ONNX Runtime - PyTorch| = {i['max_abs_diff']:.2e}"
            )
        for batch, t in onnx["ort_latency_ms"].items():
            print(
                f"ONNX Runtime latency ({onnx['ort_level']} optimisations), batch {batch}: "
                + ", ".join(f"{k} {v:.2f} ms" for k, v in t.items())
            )
    if "torch_export" in results:
        te = results["torch_export"]
        print(f"torch.export: {te['file']} ({te['batch_norm_ops']} batch_norm ops)")
