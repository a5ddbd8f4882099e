"""Predictions with uncertainty from a trained run: the plain function behind ``ltrain-predict``.

    ltrain-predict source=runs/2026-11-23/12-00-00 mc.samples=30            # the run's test split
    ltrain-predict source=.../checkpoints/last.ckpt images=/path/to/photos  # a folder of images

The network is rebuilt from the run's ``config.yaml`` and its checkpoint's weights (loaded with
``weights_only=True``); inputs get exactly the run's evaluation transform (the same standardisation
statistics, size and channels). Written in the output directory: ``predictions.csv`` (one row per
input: predicted class, confidence, entropy, mutual information, sample agreement, per-class mean
and std when there are at most 20 classes), ``metrics.json`` (deterministic and MC-dropout accuracy,
calibration error, NLL, Brier when labels are known) and ``reliability.png``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ltrain.data.base import ImageClassificationData
from ltrain.errors import LtrainError
from ltrain.inference.mc_dropout import mc_dropout
from ltrain.inference.uncertainty import classification_metrics, predictive_entropy
from ltrain.io import atomic_write_bytes, atomic_write_json

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val", "test")
MAX_CLASS_COLUMNS = 20


def find_run(source: str | Path, checkpoint: str = "best") -> tuple[DictConfig, Path]:
    """The training config and checkpoint file of ``source``: a run directory or a checkpoint inside one."""
    source = Path(source).expanduser()
    if source.is_file():
        ckpt, run_dir = source, source.parent.parent
    elif source.is_dir():
        run_dir, ckpt = source, source / "checkpoints" / f"{checkpoint}.ckpt"
        if not ckpt.is_file():
            found = sorted(p.name for p in (source / "checkpoints").glob("*.ckpt"))
            raise LtrainError(
                f"{ckpt} does not exist (checkpoint={checkpoint}); found: {found or 'no checkpoints'}. "
                "Use checkpoint=best|last or point source= at a .ckpt file"
            )
    else:
        raise LtrainError(f"source={source} is neither a run directory nor a checkpoint file")
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise LtrainError(
            f"no config.yaml in {run_dir}: source= must be an ltrain run directory "
            "(or a checkpoint in its checkpoints/ folder), which records how the model was built"
        )
    return OmegaConf.load(config), ckpt


def load_network(run_cfg: DictConfig, ckpt: Path, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """The run's network with the checkpoint's weights (a Lightning checkpoint of ClassifierModule)."""
    from ltrain.models.factory import build_model

    model = build_model(run_cfg.model, num_classes, input_shape)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    weights = {k.removeprefix("model."): v for k, v in state.get("state_dict", state).items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(weights, strict=True)
    if missing or unexpected:
        raise LtrainError(
            f"{ckpt} does not match the run's model {run_cfg.model.name}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    return model.eval()


def image_folder_tensors(folder: str | Path, dm: ImageClassificationData) -> tuple[torch.Tensor, list[str]]:
    """Every image under ``folder`` (recursively, sorted), decoded like the training data, then transformed."""
    from PIL import Image

    folder = Path(folder).expanduser()
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not files:
        raise LtrainError(f"images={folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) found there")
    c, h, w = dm.splits["train"].images.shape[1:]  # the dataset's stored (pre-transform) image shape
    transform = dm.splits["test"].transform
    xs = []
    for f in files:
        img = Image.open(f).convert("L" if c == 1 else "RGB").resize((w, h))
        arr = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).reshape(h, w, c).permute(2, 0, 1)
        xs.append(transform(arr))
    return torch.stack(xs), [str(f) for f in files]


def split_tensors(dm: ImageClassificationData, split: str, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The transformed images and labels of one split of the data module."""
    if split not in SPLITS:
        raise LtrainError(f"split={split!r} is not one of {list(SPLITS)}")
    ds = dm.splits[split]
    n = len(ds) if limit is None else min(limit, len(ds))
    xs, ys = zip(*(ds[i] for i in range(n)), strict=True)
    return torch.stack(xs), torch.stack(ys)


def predict(cfg: DictConfig, out_dir: str | Path) -> dict[str, Any]:
    """Predict ``cfg.source``'s model on a split or a folder of images; write CSV, JSON and a reliability plot."""
    out_dir = Path(out_dir)
    if OmegaConf.is_missing(cfg, "source"):
        raise LtrainError(
            "source= is required: a training run directory (e.g. source=runs/2026-11-23/12-00-00) "
            "or a checkpoint file inside one"
        )
    run_cfg, ckpt = find_run(cfg.source, cfg.checkpoint)
    data_cfg = cfg.data if cfg.get("data") else run_cfg.data
    dm = instantiate(data_cfg, _convert_="all")
    dm.prepare_data()
    dm.setup()
    model = load_network(run_cfg, ckpt, dm.num_classes, dm.input_shape)
    if cfg.get("images"):
        x, names = image_folder_tensors(cfg.images, dm)
        y = None
        if cfg.get("limit"):
            x, names = x[: cfg.limit], names[: cfg.limit]
    else:
        x, y = split_tensors(dm, cfg.split, cfg.get("limit"))
        names = [f"{cfg.split}[{i}]" for i in range(len(x))]
    mc = cfg.mc
    det, mean, std, mi, agree, sampled = [], [], [], [], [], None
    for b, start in enumerate(range(0, len(x), cfg.batch_size)):
        xb = x[start : start + cfg.batch_size]
        with torch.no_grad():
            det.append(model(xb).softmax(-1))
        if mc.samples > 0:
            p = mc_dropout(
                model,
                xb,
                samples=mc.samples,
                seed=mc.seed * 100_003 + b,
                chunk_size=mc.chunk_size,
                max_memory_mb=mc.max_memory_mb,
                path=mc.path,
                drop_path=mc.drop_path,
            )
            mean.append(p.mean), std.append(p.std), mi.append(p.mutual_info), agree.append(p.agreement)
            sampled = {"path": p.path, "note": p.note, "sites": p.sites}
    det_p = torch.cat(det)
    probs = torch.cat(mean) if mean else det_p
    columns = {
        "input": names,
        "predicted": probs.argmax(1).tolist(),
        "predicted_name": [dm.class_names[i] for i in probs.argmax(1).tolist()],
        "confidence": probs.max(1).values.tolist(),
        "entropy": predictive_entropy(probs).tolist(),
        "deterministic_predicted": det_p.argmax(1).tolist(),
    }
    if mean:
        columns |= {"mutual_info": torch.cat(mi).tolist(), "agreement": torch.cat(agree).tolist()}
    if y is not None:
        columns |= {"label": y.tolist(), "correct": (probs.argmax(1) == y).int().tolist()}
    if probs.shape[1] <= MAX_CLASS_COLUMNS:
        all_std = torch.cat(std) if std else torch.zeros_like(probs)
        for c, name in enumerate(dm.class_names):
            columns[f"p[{name}]"] = probs[:, c].tolist()
            if mean:
                columns[f"std[{name}]"] = all_std[:, c].tolist()
    write_csv(out_dir / "predictions.csv", columns)
    report: dict[str, Any] = {
        "source": str(cfg.source),
        "checkpoint": str(ckpt),
        "inputs": len(x),
        "classes": dm.class_names,
        "mc": {**OmegaConf.to_container(mc, resolve=True), **(sampled or {})},
    }
    if y is not None:
        report["metrics"] = {"deterministic": classification_metrics(det_p, y, cfg.n_bins)}
        if mean:
            report["metrics"]["mc_dropout"] = classification_metrics(probs, y, cfg.n_bins)
        if cfg.get("plots", True):
            from ltrain.inference.reliability import plot_reliability

            curves = {"deterministic": det_p} | ({f"MC dropout (T={mc.samples})": probs} if mean else {})
            plot_reliability(
                curves,
                y,
                out_dir / "reliability.png",
                n_bins=cfg.n_bins,
                title=f"{run_cfg.model.name} on {dm.name} ({cfg.split})",
            )
    atomic_write_json(out_dir / "metrics.json", report)
    return report


def write_csv(path: Path, columns: dict[str, list]) -> Path:
    """Columns of equal length as a CSV file (written atomically); floats with 6 significant digits."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(columns)
    for row in zip(*columns.values(), strict=True):
        writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])
    return atomic_write_bytes(path, buf.getvalue().encode())
