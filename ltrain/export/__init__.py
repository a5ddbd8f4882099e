"""Deployment: fold BatchNorm into neighbouring layers (fold.py) and export to ONNX, checked in ONNX Runtime (onnx.py)."""

from ltrain.export.fold import FoldedBN, FoldReport, SkippedBN, fold_batchnorm

__all__ = ["FoldReport", "FoldedBN", "SkippedBN", "fold_batchnorm"]
