"""The low_latency preset end to end: train (ℓ1, BN before leaky ReLU), fold, zero the tiny weights, int8 in ONNX
Runtime — each lossy step measured on the real held-out digits against the float model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ltrain.errors import LtrainError
from ltrain.export.onnx import ort_outputs
from ltrain.export.pipeline import export_model
from ltrain.train import train

pytest.importorskip("onnxruntime")


def _accuracy(logits, labels) -> float:
    return float((np.asarray(logits).argmax(-1) == labels).mean())


@pytest.fixture(scope="module")
def low_latency_run(tmp_path_factory):
    from tests.conftest import compose_config

    cfg = compose_config("preset=low_latency", "trainer.max_epochs=3", "test=false", "plots=false")
    out = train(cfg, tmp_path_factory.mktemp("run"))
    dm = out.datamodule
    x, y = (torch.cat(t) for t in zip(*dm.test_dataloader(), strict=True))
    return out.module.model.eval(), x, y.numpy()


def test_sparse_and_int8_exports_keep_test_accuracy_within_a_point(low_latency_run, tmp_path):
    model, x, y = low_latency_run
    with torch.no_grad():
        reference = _accuracy(model(x), y)
    assert reference > 0.85
    results = export_model(model, x[:1], tmp_path, sparsify=1e-3, quantize="int8", latency_repeats=1, latency_warmup=0)

    sparse = results["sparsify"]
    assert 0.0 < sparse["sparsity"] < 0.9 and sparse["zeroed"] > 0
    folded = ort_outputs(tmp_path / "model.onnx", x)  # folded + sparsified, checked in ORT against PyTorch
    int8 = ort_outputs(tmp_path / "model_int8.onnx", x)
    files = results["onnx"]["files"]
    assert files["int8"]["bytes"] < 0.5 * files["folded"]["bytes"]  # 8-bit weights: about a quarter of 32-bit
    for name, logits in (("sparse", folded), ("int8", int8)):
        assert abs(_accuracy(logits, y) - reference) <= 0.01, (name, _accuracy(logits, y), reference)
    assert "int8" in results["onnx"]["ort_latency_ms"]["1"]


def test_zeroing_weights_leaves_the_caller_model_untouched_and_bad_options_are_refused(low_latency_run, tmp_path):
    model, x, _ = low_latency_run
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_model(model, x[:1], tmp_path, fold=False, sparsify=1e-2, onnx=False, latency_repeats=1, latency_warmup=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(LtrainError, match="quantize='int4' is not one of"):
        export_model(model, x[:1], tmp_path, quantize="int4")
    with pytest.raises(LtrainError, match="sparsify=-1"):
        export_model(model, x[:1], tmp_path, sparsify=-1, onnx=False)
