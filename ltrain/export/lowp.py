"""The low-latency preset's last two steps: zero the tiny weights (sparse) and 8-bit weights (lower precision).

Both trade exactness for size or speed, so both report what they cost: how far the outputs moved and
how often the top class changed on the check inputs. Quantisation is ONNX Runtime's own dynamic int8
quantisation (weights int8, activations quantised on the fly); nothing here re-implements it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ltrain.errors import LtrainError

QUANTIZE = (None, "int8")


def zero_small_weights(model: nn.Module, threshold: float) -> dict[str, Any]:
    """Set every Linear / Conv weight with ``|w| < threshold`` to exactly 0, in place (what ℓ1 training prepares)."""
    if threshold < 0:
        raise LtrainError(f"sparsify={threshold} must be >= 0 (0 keeps every weight)")
    zeroed = total = 0
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                small = m.weight.abs() < threshold
                m.weight[small] = 0.0
                zeroed += int(small.sum())
                total += m.weight.numel()
    return {"threshold": threshold, "zeroed": zeroed, "weights": total, "sparsity": zeroed / max(total, 1)}


def output_change(before: torch.Tensor, after: torch.Tensor) -> dict[str, float]:
    """Max |after - before| relative to the output scale, and the fraction of inputs whose top class changed."""
    scale = float(before.abs().max().clamp_min(1e-12))
    return {
        "max_rel_diff": float((after - before).abs().max()) / scale,
        "top1_changed": float((after.argmax(-1) != before.argmax(-1)).float().mean()),
    }


def quantize_int8(onnx_path: str | Path, out_path: str | Path) -> Path:
    """ONNX Runtime dynamic quantisation of ``onnx_path``: int8 weights for MatMul / Gemm / Conv."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:
        raise LtrainError("quantize=int8 needs ONNX Runtime: pip install 'ltrain[export]'") from e
    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    root = logging.getLogger()  # the quantiser logs every tensor it leaves in float on the root logger, at INFO
    quiet = _DropInfoFrom("onnxruntime")  # only its INFO records: the root logger's level and handlers stay as set
    root.addFilter(quiet)
    try:
        quantize_dynamic(str(onnx_path), str(tmp), weight_type=QuantType.QInt8)
    finally:
        root.removeFilter(quiet)
    tmp.replace(out_path)  # atomic: no half-written model_int8.onnx
    return out_path


class _DropInfoFrom(logging.Filter):
    """Drops records below WARNING logged from files of one package (by path: it logs on the root logger)."""

    def __init__(self, package: str):
        super().__init__()
        self.package = package

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or self.package not in record.pathname.replace("\\", "/")
