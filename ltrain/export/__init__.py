"""Deployment: fold BatchNorm into neighbouring layers (fold.py), export to ONNX checked in ONNX Runtime (onnx.py),
and the whole ``ltrain-export`` pipeline as a plain function (pipeline.py)."""

from ltrain.export.fold import FoldedBN, FoldReport, SkippedBN, fold_batchnorm
from ltrain.export.onnx import export_onnx, onnx_op_counts, ort_max_diff
from ltrain.export.pipeline import export_model

__all__ = [
    "FoldReport",
    "FoldedBN",
    "SkippedBN",
    "export_model",
    "export_onnx",
    "fold_batchnorm",
    "onnx_op_counts",
    "ort_max_diff",
]
