"""Library code leaves the user's process as it found it: no matplotlib backend switch, no root-logger change."""

from __future__ import annotations

import subprocess
import sys

import pytest

PLOT_WITHOUT_PYPLOT = """
import csv, sys, tempfile, pathlib
import matplotlib
matplotlib.use("svg")  # a user's own backend choice
from ltrain.plots import plot_learning_curves
d = pathlib.Path(tempfile.mkdtemp())
with open(d / "metrics.csv", "w", newline="") as f:
    w = csv.writer(f); w.writerow(["epoch", "step", "train/loss", "val/loss", "val/acc"])
    for e in range(3): w.writerow([e, e, 1.0 / (e + 1), 1.1 / (e + 1), 0.5 + e / 10])
out = plot_learning_curves(d / "metrics.csv", d / "curves.png")
assert out.is_file() and out.stat().st_size > 1000, out
print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
"""


def test_drawing_a_plot_keeps_the_users_backend_and_never_imports_pyplot():
    out = subprocess.run([sys.executable, "-c", PLOT_WITHOUT_PYPLOT], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["svg", "False"], out.stdout


def test_int8_quantisation_keeps_its_per_tensor_info_out_of_the_log_and_the_root_logger_as_set(tmp_path):
    pytest.importorskip("onnxruntime")
    import logging

    import torch

    from ltrain.export.lowp import quantize_int8

    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()
    torch.onnx.export(model, (torch.randn(2, 8),), tmp_path / "m.onnx", dynamo=False)
    root = logging.getLogger()
    seen: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = seen.append
    level, filters = root.level, list(root.filters)
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        quantize_int8(tmp_path / "m.onnx", tmp_path / "m_int8.onnx")
        assert (root.level, root.filters) == (logging.INFO, filters)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    assert not [r for r in seen if "onnxruntime" in r.pathname and r.levelno < logging.WARNING]
    assert (tmp_path / "m_int8.onnx").is_file()
