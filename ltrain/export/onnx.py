"""Export to ONNX and prove the file: run it in ONNX Runtime against PyTorch, count its ops, time it.

torch.onnx.export and onnxruntime do the work; this module adds the checks a deployment needs (the
max difference to eager PyTorch, how many BatchNormalization nodes are left) and a dynamic batch axis.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ltrain.errors import LtrainError

ORT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def export_onnx(
    model: nn.Module, example_input: torch.Tensor, path: str | Path, *, dynamo: bool = True, opset: int | None = None
) -> Path:
    """Write ``model`` (eval mode) to ``path`` as ONNX with a dynamic batch axis (input ``input``, output ``output``).

    ``dynamo=True`` is torch's default exporter (torch.export based; needs ``onnxscript``);
    ``dynamo=False`` the older TorchScript one, for models torch.export cannot capture.
    """
    _require("onnx", "onnxscript" if dynamo else "onnx")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    kwargs: dict[str, Any] = {"input_names": ["input"], "output_names": ["output"], "opset_version": opset}
    if dynamo:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=4096)},)
        if example_input.shape[0] == 1:  # torch.export specialises size-1 dims; trace with a batch of 2
            example_input = torch.cat([example_input, example_input])
    else:
        kwargs["dynamic_axes"] = {"input": {0: "batch"}, "output": {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad(), _quiet_exporter_logs():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example_input,), str(path), dynamo=dynamo, external_data=False, verbose=False, **kwargs
        )
    return path


@contextlib.contextmanager
def _quiet_exporter_logs():
    """The dynamo exporter's optimiser logs every rewrite at INFO (which Hydra's job logging prints)."""
    loggers = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def onnx_op_counts(path: str | Path) -> collections.Counter:
    """How many nodes of each op type the ONNX file holds (graph, subgraphs and local functions)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    counts: collections.Counter = collections.Counter()

    def walk(graph) -> None:
        for node in graph.node:
            counts[node.op_type] += 1
            for attr in node.attribute:
                for g in (attr.g, *attr.graphs) if attr.HasField("g") else attr.graphs:
                    walk(g)

    walk(proto.graph)
    for fn in proto.functions:
        for node in fn.node:
            counts[node.op_type] += 1
    return counts


def ort_session(path: str | Path, level: str = "all", threads: int | None = None):
    """An ONNX Runtime CPU session at a graph optimisation ``level``: disable | basic | extended | all."""
    ort = _require("onnxruntime", "onnxruntime")
    if level not in ORT_LEVELS:
        raise LtrainError(f"ONNX Runtime level {level!r} is not one of {list(ORT_LEVELS)}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ORT_LEVELS[level])
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ort_outputs(path: str | Path, inputs: torch.Tensor, level: str = "all") -> np.ndarray:
    """The ONNX file's first output on ``inputs``, computed by ONNX Runtime."""
    session = ort_session(path, level)
    return session.run(None, {session.get_inputs()[0].name: inputs.detach().cpu().numpy()})[0]


def ort_max_diff(path: str | Path, model: nn.Module, inputs: torch.Tensor, level: str = "all") -> tuple[float, float]:
    """(max |ONNX Runtime - PyTorch|, max |PyTorch|) on ``inputs``: the exported file's proof."""
    got = ort_outputs(path, inputs, level)
    with torch.no_grad():
        want = model.eval()(inputs).detach().cpu().numpy()
    return float(np.abs(got - want).max()), float(np.abs(want).max())


def torch_export_batch_norms(model: nn.Module, example_input: torch.Tensor) -> int:
    """How many batch-norm ops ``torch.export`` captures from ``model`` (0 for a fully folded model)."""
    with torch.no_grad():
        program = torch.export.export(model.eval(), (example_input,))
    return sum("batch_norm" in str(node.target) for node in program.graph.nodes if node.op == "call_function")


def _require(module: str, package: str):
    try:
        return __import__(module)
    except ImportError as e:
        raise LtrainError(f"ONNX export needs the '{package}' package: pip install 'ltrain[export]'") from e
