"""Predictions with uncertainty from a trained run: the plain function behind ``ltrain-predict``.

    ltrain-predict source=runs/2026-11-23/12-00-00 mc.samples=30            # the run's test split
    ltrain-predict source=.../checkpoints/last.ckpt images=/path/to/photos  # a folder of images

The network is rebuilt from the run's ``config.yaml`` and its checkpoint's weights (loaded with
``weights_only=True``); inputs get exactly the run's evaluation transform (the same standardisation
statistics, size and channels). Written in the output directory: ``predictions.csv`` (one row per
input: predicted class, confidence, entropy, mutual information, sample agreement, per-class mean
and std when there are at most 20 classes), ``metrics.json`` (deterministic and MC-dropout accuracy,
calibration error, NLL, Brier when labels are known) and ``reliability.png``.

It runs through ``trainer.predict`` (any accelerator, ``trainer.devices`` > 1 shards the inputs): inputs are
read batch by batch, each batch's rows are appended to the CSV by a ``BasePredictionWriter`` and its
metrics added to :class:`~ltrain.inference.evaluation.CalibrationMetrics` sums, so memory does not grow
with the number of inputs. ``mc.samples=null`` (the default) samples 30 times when the network has
dropout and predicts deterministically, saying so, when it has none.
"""

from __future__ import annotations

import csv
import heapq
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import BasePredictionWriter
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ltrain.data.base import ImageClassificationData
from ltrain.errors import LtrainError
from ltrain.inference.evaluation import CalibrationMetrics, MCSettings, predict_batch
from ltrain.inference.reliability import plot_reliability
from ltrain.inference.uncertainty import predictive_entropy
from ltrain.io import atomic_write_json
from ltrain.models.factory import build_model

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


class ImageFiles(Dataset):
    """Every image under ``folder`` (recursively, sorted), decoded like the data module's images and given its
    evaluation transform, one file at a time; the label is -1 (unknown)."""

    def __init__(self, folder: str | Path, dm: ImageClassificationData):
        folder = Path(folder).expanduser()
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        if not files:
            raise LtrainError(f"images={folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) found there")
        self.files = files
        test = dm.splits["test"]
        self.load = getattr(test, "load", None)  # a streamed folder decodes files itself (full size, its mode)
        self.shape = None if self.load else tuple(dm.splits["train"].images.shape[1:])  # stored (C, H, W)
        self.transform = test.transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        if self.load is not None:
            return self.transform(self.load(self.files[i])), torch.tensor(-1)
        c, h, w = self.shape
        img = Image.open(self.files[i]).convert("L" if c == 1 else "RGB").resize((w, h))
        arr = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).reshape(h, w, c).permute(2, 0, 1)
        return self.transform(arr), torch.tensor(-1)


def inputs_of(cfg: DictConfig, dm: ImageClassificationData) -> tuple[Dataset, list[str], bool]:
    """The dataset to predict (a split or a folder of images, cut to ``limit``), its row names, and whether
    it has labels."""
    if cfg.get("images"):
        ds: Dataset = ImageFiles(cfg.images, dm)
        names, labelled = [str(f) for f in ds.files], False
    else:
        if cfg.split not in SPLITS:
            raise LtrainError(f"split={cfg.split!r} is not one of {list(SPLITS)}")
        ds = dm.splits[cfg.split]
        names, labelled = [f"{cfg.split}[{i}]" for i in range(len(ds))], True
    if cfg.get("limit") and cfg.limit < len(ds):
        ds, names = Subset(ds, range(cfg.limit)), names[: cfg.limit]
    return ds, names, labelled


class MCPredictor(L.LightningModule):
    """``trainer.predict`` of a network: deterministic and MC-dropout probabilities per batch, and their
    metrics (torchmetrics sums: the whole data set's figures on every rank) when labels are known."""

    def __init__(self, net: nn.Module, mc: MCSettings, labelled: bool):
        super().__init__()
        self.net, self.mc, self.labelled = net, mc, labelled
        self.det_metrics = CalibrationMetrics(mc.n_bins)
        self.mc_metrics = CalibrationMetrics(mc.n_bins, mutual_info=True)
        self.sampled: dict[str, Any] = {}
        self.metrics: dict[str, dict[str, float]] = {}
        self.bins: dict[str, dict[str, torch.Tensor]] = {}

    def predict_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        x, y = batch[0], batch[1]
        det, pred = predict_batch(
            self.net, x, self.mc, self.mc.batch_seed(batch_idx, self.global_rank, self.trainer.world_size)
        )
        out = {"det": det, "probs": det, "y": y}
        if pred is not None:
            out |= {"probs": pred.mean, "std": pred.std, "mutual_info": pred.mutual_info, "agreement": pred.agreement}
            self.sampled = self.sampled or {"path": pred.path, "note": pred.note, "sites": pred.sites}
        if self.labelled:
            self.det_metrics.update(det, y)
            if pred is not None:
                self.mc_metrics.update(pred.mean, y, pred.mutual_info)
        return {k: v.cpu() for k, v in out.items()}

    def on_predict_epoch_end(self) -> None:
        if not self.labelled:
            return
        arms = {"deterministic": self.det_metrics} | ({"mc_dropout": self.mc_metrics} if self.mc.samples else {})
        self.metrics = {arm: metric.compute() for arm, metric in arms.items()}
        self.bins = {arm: metric.bins() for arm, metric in arms.items()}


class CSVPredictionWriter(BasePredictionWriter):
    """Rows of ``predictions.csv`` written batch by batch (one part file per rank, merged in input order by
    rank zero at the end, then moved into place atomically); the predictions are never held in memory."""

    def __init__(self, path: Path, names: list[str], class_names: list[str]):
        super().__init__(write_interval="batch")
        self.path, self.names, self.class_names = path, names, class_names
        self._file = None
        self._writer = None

    def _part(self, rank: int) -> Path:
        return self.path.with_name(f".{self.path.name}.rank{rank}.part")

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        columns = self.columns(prediction)
        if self._writer is None:
            self._file = open(self._part(trainer.global_rank), "w", newline="")  # noqa: SIM115 closed in on_predict_end
            self._writer = csv.writer(self._file)
            self._writer.writerow(["index", *columns])
        for i, row in zip(batch_indices, zip(*columns.values(), strict=True), strict=True):
            self._writer.writerow([i, *(f"{v:.6g}" if isinstance(v, float) else v for v in row)])

    def columns(self, p: dict[str, torch.Tensor]) -> dict[str, list]:
        """One batch's columns: prediction, confidence, entropy, MC spread, label, per-class probabilities."""
        probs, predicted = p["probs"], p["probs"].argmax(1).tolist()
        columns: dict[str, list] = {
            "predicted": predicted,
            "predicted_name": [self.class_names[i] for i in predicted],
            "confidence": probs.max(1).values.tolist(),
            "entropy": predictive_entropy(probs).tolist(),
            "deterministic_predicted": p["det"].argmax(1).tolist(),
        }
        if "std" in p:
            columns |= {"mutual_info": p["mutual_info"].tolist(), "agreement": p["agreement"].tolist()}
        if bool((p["y"] >= 0).all()):
            columns |= {"label": p["y"].tolist(), "correct": (probs.argmax(1) == p["y"]).int().tolist()}
        if probs.shape[1] <= MAX_CLASS_COLUMNS:
            for c, name in enumerate(self.class_names):
                columns[f"p[{name}]"] = probs[:, c].tolist()
                if "std" in p:
                    columns[f"std[{name}]"] = p["std"][:, c].tolist()
        return columns

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._file is not None:
            self._file.close()
            self._file = self._writer = None
        trainer.strategy.barrier("predictions written")
        if trainer.is_global_zero:
            merge_parts([self._part(r) for r in range(trainer.world_size)], self.path, self.names)


def merge_parts(parts: list[Path], path: Path, names: list[str]) -> Path:
    """Merge per-rank part files (each in increasing input index) into ``path`` in input order, atomically;
    the index column becomes the input's name."""
    parts = [p for p in parts if p.is_file()]
    files = [open(p, newline="") for p in parts]  # noqa: SIM115 closed below
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        readers = [csv.reader(f) for f in files]
        headers = [next(r) for r in readers]
        with open(tmp, "w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["input", *headers[0][1:]])
            seen = set()
            for row in heapq.merge(*readers, key=lambda r: int(r[0])):
                if row[0] not in seen:  # a DistributedSampler pads with repeated inputs
                    seen.add(row[0])
                    writer.writerow([names[int(row[0])], *row[1:]])
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        for f in files:
            f.close()
        tmp.unlink(missing_ok=True)
        for p in parts:
            p.unlink(missing_ok=True)
    return path


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
    if "model_name" in data_cfg:  # a streamed image folder: the preprocessing the run's model was trained with
        pretrained = run_cfg.model.get("pretrained")  # a zoo entry's recorded preprocessing, if it started from one
        data_cfg = OmegaConf.merge(data_cfg, {"model_name": str(run_cfg.model.name), "pretrained": pretrained})
    dm = instantiate(data_cfg, _convert_="all")
    dm.prepare_data()
    dm.setup()
    net = load_network(run_cfg, ckpt, dm.num_classes, dm.input_shape)
    asked: MCSettings = instantiate(cfg.mc)
    mc = asked.resolved(net)
    ds, names, labelled = inputs_of(cfg, dm)
    module = MCPredictor(net, mc, labelled)
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = CSVPredictionWriter(out_dir / "predictions.csv", names, dm.class_names)
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=[writer], logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    loader = DataLoader(ds, batch_size=cfg.batch_size, shuffle=False)
    trainer.predict(module, loader, return_predictions=False)
    report: dict[str, Any] = {
        "source": str(cfg.source),
        "checkpoint": str(ckpt),
        "inputs": len(names),
        "classes": dm.class_names,
        "mc": {**OmegaConf.to_container(cfg.mc, resolve=True), "samples": mc.samples, **module.sampled},
    }
    report["mc"].pop("_target_", None)
    if asked.samples is None and not mc.samples:
        report["mc"]["note"] = (
            f"{run_cfg.model.name} has no dropout: deterministic predictions only (mc.samples=null). "
            "Train with dropout (model.dropout=0.2, or preset=risk_sensitive) for MC-dropout uncertainty"
        )
    if module.metrics:
        report["metrics"] = module.metrics
    if trainer.is_global_zero:
        if module.bins and cfg.get("plots", True):
            curves = {
                ("deterministic" if k == "deterministic" else f"MC dropout (T={mc.samples})"): v
                for k, v in module.bins.items()
            }
            plot_reliability(
                curves, out_dir / "reliability.png", title=f"{run_cfg.model.name} on {dm.name} ({cfg.split})"
            )
        atomic_write_json(out_dir / "metrics.json", report)
    return report
