"""Record one real forward pass as a dataflow graph: which torch call produced a tensor, which calls consumed it.

Why not ``torch.fx``: symbolic tracing fails on some timm models (data-dependent shapes, ``_assert``) and
traces timm's ``BatchNormAct2d`` into functional calls. A ``TorchFunctionMode`` sees every torch call a real
forward makes, on every model that runs, with the real tensors. Producer/consumer links are then tensor
IDENTITY (``is``), not module order, so a pair is only reported when the data really flows that way.

The price of a dynamic trace: only the path taken for the example input is seen (models whose eval forward
branches on the data could differ); :func:`ltrain.export.fold_batchnorm` therefore re-checks the outputs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

# Layer functions whose output channels (and, for conv/linear, input channels) a BN can be folded into.
CONV_FUNCS = {torch.conv1d: 1, torch.conv2d: 2, torch.conv3d: 3}
CONV_TRANSPOSE_FUNCS = {torch.conv_transpose1d: 1, torch.conv_transpose2d: 2, torch.conv_transpose3d: 3}
LINEAR_FUNCS = {F.linear}
LAYER_FUNCS = {*CONV_FUNCS, *CONV_TRANSPOSE_FUNCS, *LINEAR_FUNCS}
CAT_FUNCS = {torch.cat, torch.concat, torch.concatenate}
BATCH_NORM_FUNCS = {F.batch_norm}
# In eval mode these return their input object untouched: not a consumer (so BN -> Dropout -> Linear folds).
DROPOUT_FUNCS = {F.dropout, F.alpha_dropout, F.feature_alpha_dropout, F.dropout1d, F.dropout2d, F.dropout3d}

# Argument positions of the calls we read (as in torch.nn.functional's signatures).
_LAYER_POS = {"input": 0, "weight": 1, "bias": 2, "stride": 3, "padding": 4}
_BN_POS = {"input": 0, "running_mean": 1, "running_var": 2, "weight": 3, "bias": 4, "training": 5, "eps": 7}
_CAT_POS = {"tensors": 0, "dim": 1}


def _positions(func: Callable) -> dict[str, int]:
    return _BN_POS if func in BATCH_NORM_FUNCS else _CAT_POS if func in CAT_FUNCS else _LAYER_POS


@dataclass(eq=False)
class Call:
    """One torch function call of the recorded forward pass."""

    func: Callable
    args: tuple
    kwargs: dict
    output: Any
    index: int

    def arg(self, name: str, default: Any = None) -> Any:
        """An argument by its torch.nn.functional name, whether it was passed by position or keyword."""
        if name in self.kwargs:
            return self.kwargs[name]
        pos = _positions(self.func)[name]
        return self.args[pos] if pos < len(self.args) else default

    @property
    def name(self) -> str:
        return getattr(self.func, "__name__", str(self.func))


@dataclass
class Dataflow:
    """What one forward pass did, keyed by tensor identity (``id``) of tensors kept alive for the purpose.

    ``producer[id(t)]`` is the layer / cat / batch_norm call that returned ``t`` (only those kinds are kept);
    ``consumers[id(t)]`` lists every call that read ``t`` (for layer outputs, batch-norm outputs and every
    parameter or buffer of the model). A call that only reads metadata (``t.shape``, ``t.ndim``) is not a
    consumer; an in-place write is.
    """

    producer: dict[int, Call] = field(default_factory=dict)
    consumers: dict[int, list[Call]] = field(default_factory=lambda: defaultdict(list))
    calls: list[Call] = field(default_factory=list)
    module_outputs: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))
    output: Any = None
    keep_alive: list[Any] = field(default_factory=list)

    def uses(self, t: torch.Tensor) -> list[Call]:
        return self.consumers.get(id(t), [])


class _Recorder(TorchFunctionMode):
    def __init__(self, flow: Dataflow, watched: set[int]):
        super().__init__()
        self.flow = flow
        self.watched = watched  # ids of tensors whose consumers we count

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        name = getattr(func, "__name__", "")
        reads_values = bool(outputs) or name == "__setitem__" or "out" in kwargs
        if not reads_values or _is_passthrough(func, args, kwargs, out):  # shape / ndim queries, eval dropout
            return out
        call = Call(func, args, kwargs, out, len(self.flow.calls))
        self.flow.calls.append(call)
        for t in inputs:
            if id(t) in self.watched:
                self.flow.consumers[id(t)].append(call)
        if func in LAYER_FUNCS or func in CAT_FUNCS or func in BATCH_NORM_FUNCS:
            for t in outputs:
                self.flow.keep_alive.append(t)  # keeps the id unique for the whole pass
                self.watched.add(id(t))
                self.flow.producer[id(t)] = call
        return out


def _is_passthrough(func: Callable, args: tuple, kwargs: dict, out: Any) -> bool:
    if func not in DROPOUT_FUNCS or not args or out is not args[0]:
        return False
    training = kwargs.get("training", args[2] if len(args) > 2 else True)
    return not training


@torch.no_grad()
def record_dataflow(model: torch.nn.Module, example_input: Any, watch_modules: list[torch.nn.Module] = ()) -> Dataflow:
    """Run ``model(example_input)`` once and return its :class:`Dataflow` (outputs of ``watch_modules`` too)."""
    flow = Dataflow()
    watched = {id(t) for t in (*model.parameters(), *model.buffers())}
    handles = [
        m.register_forward_hook(lambda mod, args, out: flow.module_outputs[id(mod)].append(out)) for m in watch_modules
    ]
    try:
        with _Recorder(flow, watched):
            inputs = example_input if isinstance(example_input, tuple) else (example_input,)
            flow.output = model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return flow
