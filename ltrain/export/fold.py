"""``fold_batchnorm(model)``: an eval-mode copy without the BatchNorm layers that can be folded exactly.

What torch.fx's ``fuse()`` lacks, and why this exists: it cannot trace some timm models at all, it never
folds timm's ``BatchNormAct2d`` (EfficientNet, MobileNet, RegNet, DenseNet, CSPDarknet ...), it does not
fold a BN into the layer AFTER it, and it says nothing about what it left. Here pairs are found on a real
forward pass (:mod:`ltrain.export.trace`) by tensor identity, each fold is checked for exactness
conditions, everything left gets a reason, and the folded copy's outputs are compared with the original's.

Usage::

    folded, report = fold_batchnorm(model)           # model is untouched
    print(report.summary())                           # counts, every BN left and why, max difference
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils._pytree import tree_flatten

from ltrain.errors import LtrainError
from ltrain.export.fold_math import bn_scale_shift, fold_into_inputs, fold_into_outputs
from ltrain.export.trace import (
    BATCH_NORM_FUNCS,
    CAT_FUNCS,
    CONV_FUNCS,
    CONV_TRANSPOSE_FUNCS,
    LAYER_FUNCS,
    LINEAR_FUNCS,
    Call,
    Dataflow,
    record_dataflow,
)
from ltrain.models.network import find_network

LAYER_TYPES = (nn.modules.conv._ConvNd, nn.Linear)


@dataclass(frozen=True)
class FoldedBN:
    """A BN that was folded: ``into`` names the layer(s) that absorbed it; ``side`` is where they sit."""

    name: str
    into: tuple[str, ...]
    side: str  # "before": the layer(s) feeding the BN; "after": the layer the BN feeds
    follows_layer: bool = True


@dataclass(frozen=True)
class SkippedBN:
    """A BN that was left in the model, and why folding it would not be exact."""

    name: str
    reason: str
    follows_layer: bool = False  # its input is the output of a conv / linear layer (or a channel concat of them)


@dataclass
class FoldReport:
    """What :func:`fold_batchnorm` did. ``rel_diff`` = max |folded - original| / max |original| on the example."""

    folded: list[FoldedBN] = field(default_factory=list)
    skipped: list[SkippedBN] = field(default_factory=list)
    max_abs_diff: float = float("nan")
    output_scale: float = float("nan")

    @property
    def total(self) -> int:
        return len(self.folded) + len(self.skipped)

    @property
    def follows_layer(self) -> int:
        """BN layers whose input is directly a conv / linear output (the ones the issue's 99% is about)."""
        return sum(b.follows_layer for b in (*self.folded, *self.skipped))

    @property
    def folded_following_layer(self) -> int:
        return sum(b.follows_layer for b in self.folded)

    @property
    def rel_diff(self) -> float:
        return self.max_abs_diff / self.output_scale if self.output_scale > 0 else self.max_abs_diff

    def summary(self) -> str:
        before = sum(b.side == "before" for b in self.folded)
        lines = [
            f"folded {len(self.folded)} of {self.total} BatchNorm layers "
            f"({before} into the layer before, {len(self.folded) - before} into the layer after; "
            f"{self.folded_following_layer} of {self.follows_layer} that directly follow a conv/linear layer)",
            f"max |folded - original| = {self.max_abs_diff:.3g} (output scale {self.output_scale:.3g}, "
            f"relative {self.rel_diff:.3g})",
        ]
        if self.skipped:
            lines.append(f"left {len(self.skipped)}:")
            lines += [f"  {b.name}: {b.reason}" for b in self.skipped]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "folded": len(self.folded),
            "follows_layer": self.follows_layer,
            "folded_following_layer": self.folded_following_layer,
            "max_abs_diff": self.max_abs_diff,
            "output_scale": self.output_scale,
            "rel_diff": self.rel_diff,
            "folded_layers": [asdict(b) for b in self.folded],
            "skipped_layers": [asdict(b) for b in self.skipped],
        }


@dataclass
class _Plan:
    bn_name: str
    bn: _BatchNorm
    layers: list[tuple[str, nn.Module, slice]]  # absorbing layers (a channel concat has several)
    side: str
    follows_layer: bool


class _Skip(Exception):
    """Why one BN cannot be folded on one side (collected into the report)."""


class ChannelAffine(nn.Module):
    """What an eval-mode BatchNorm computes, ``x * scale + shift`` per channel (dim 1), as plain Mul and Add.

    For a BN no layer can absorb (after a sum or concat, before an activation): exactly the same function,
    but exported to ONNX without a BatchNormalization node.
    """

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor, dtype: torch.dtype):
        super().__init__()
        self.register_buffer("scale", scale.to(dtype))
        self.register_buffer("shift", shift.to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.scale.view(shape) + self.shift.view(shape)


UNFOLDABLE = ("bn", "affine")


def fold_batchnorm(model: nn.Module, example_input: Any = None, unfoldable: str = "bn") -> tuple[nn.Module, FoldReport]:
    """An eval-mode deep copy of ``model`` with every exactly foldable BatchNorm folded, and a report.

    Folds a BN (``torch.nn.BatchNorm1d/2d/3d``, ``SyncBatchNorm``, timm's ``BatchNormAct2d``) into the
    Conv1d/2d/3d (grouped, depthwise), ConvTranspose or Linear that feeds it, or a channel concat of such
    convs (timm's MixedConv2d); failing that, into the Linear or unpadded conv it feeds. A folded
    ``BatchNormAct2d`` becomes its drop + activation. ``example_input`` (a tensor or a tuple of positional
    inputs) drives the one recorded forward pass; a LightningModule or a compiled/wrapped network is looked
    through (:func:`ltrain.models.network.find_network`); by default a random batch of one sized from the model's
    first layer and timm's ``pretrained_cfg``. The input model is not modified.

    ``unfoldable``: what becomes of a BN no layer can absorb exactly: "bn" leaves it as it is; "affine"
    replaces it by the same per-channel affine map (:class:`ChannelAffine`), so an ONNX export has no
    BatchNormalization node at all. Either way the report lists it with the reason it was not folded.
    """
    if unfoldable not in UNFOLDABLE:
        raise LtrainError(f"unfoldable={unfoldable!r} is not one of {list(UNFOLDABLE)}")
    model = find_network(model, None, "fold_batchnorm")  # a LightningModule, compiled or DDP-wrapped: its network
    folded = copy.deepcopy(model).eval()
    if example_input is None:
        example_input = default_example_input(folded)
    bns = [(name, m) for name, m in folded.named_modules() if isinstance(m, _BatchNorm)]
    flow = record_dataflow(folded, example_input, watch_modules=[m for _, m in bns])
    owners = _layer_owners(folded)

    report, plans = FoldReport(), []
    for name, bn in bns:
        plan = _plan(name, bn, flow, owners)
        if isinstance(plan, SkippedBN):
            report.skipped.append(plan)
        else:
            plans.append(plan)
    for plan in plans:
        scale, shift = bn_scale_shift(plan.bn)
        for _, layer, channels in plan.layers:
            (fold_into_outputs if plan.side == "before" else fold_into_inputs)(layer, scale[channels], shift[channels])
        _replace_module(folded, plan.bn, _replacement(plan.bn))
        report.folded.append(FoldedBN(plan.bn_name, tuple(n for n, _, _ in plan.layers), plan.side, plan.follows_layer))

    if unfoldable == "affine":
        modules = dict(folded.named_modules())
        for skipped in report.skipped:
            bn = modules[skipped.name]
            scale, shift = bn_scale_shift(bn)
            affine = ChannelAffine(scale, shift, bn.running_var.dtype)
            rest = _replacement(bn)  # a BatchNormAct2d keeps its drop + activation after the affine map
            if rest is None:  # a BN subclass with a forward of its own: left as it is
                continue
            _replace_module(folded, bn, affine if isinstance(rest, nn.Identity) else nn.Sequential(affine, rest))
    flow.keep_alive.clear()  # the recorded activations are no longer needed
    report.max_abs_diff, report.output_scale = _compare(folded, example_input, flow.output)
    return folded, report


def default_example_input(model: nn.Module) -> torch.Tensor:
    """A random batch of one for ``model``: channels from its first conv, size from timm's ``pretrained_cfg``."""
    param = next(model.parameters(), None)
    kw = {"dtype": param.dtype, "device": param.device} if param is not None else {}
    gen = torch.Generator().manual_seed(0)
    first = next((m for m in model.modules() if isinstance(m, LAYER_TYPES)), None)
    if isinstance(first, nn.Conv2d):
        cfg = getattr(model, "pretrained_cfg", None) or {}
        size = tuple(cfg.get("input_size", (3, 224, 224)))[1:]
        return torch.randn(1, first.in_channels, *size, generator=gen).to(**kw)
    if isinstance(first, nn.Linear):
        return torch.randn(1, first.in_features, generator=gen).to(**kw)
    raise LtrainError(
        f"cannot guess an input for {type(model).__name__}: pass one, e.g. "
        "fold_batchnorm(model, example_input=torch.randn(1, 3, 224, 224))"
    )


def _layer_owners(model: nn.Module) -> dict[int, tuple[str, nn.Module]]:
    """id(weight) -> (name, layer) for every conv / linear layer."""
    return {id(m.weight): (name, m) for name, m in model.named_modules() if isinstance(m, LAYER_TYPES)}


def _replacement(bn: _BatchNorm) -> nn.Module | None:
    """What a folded BN becomes: nothing, or (timm's BatchNormAct2d) its drop + activation, in that order."""
    forward = type(bn).forward
    if forward in (_BatchNorm.forward, nn.SyncBatchNorm.forward):
        return nn.Identity()
    from timm.layers.norm_act import BatchNormAct2d, SyncBatchNormAct

    if forward in (BatchNormAct2d.forward, SyncBatchNormAct.forward):
        rest = [
            (k, getattr(bn, k))
            for k in ("drop", "act")
            if not isinstance(getattr(bn, k, None), (nn.Identity, type(None)))
        ]
        return nn.Sequential(OrderedDict(rest)) if rest else nn.Identity()
    return None


def _replace_module(model: nn.Module, old: nn.Module, new: nn.Module) -> None:
    for _name, parent in list(model.named_modules(remove_duplicate=False)):
        for child_name, child in list(parent.named_children()):
            if child is old:
                setattr(parent, child_name, new)


def _plan(name: str, bn: _BatchNorm, flow: Dataflow, owners: dict) -> _Plan | SkippedBN:
    """Decide whether ``bn`` folds into the layer before it, else the layer after it, else why not."""
    try:
        call = _bn_call(bn, flow)
    except _Skip as e:
        return SkippedBN(name, str(e))
    x, y = call.arg("input"), call.output
    follows = _follows_layer(x, flow)
    try:
        return _Plan(name, bn, _layers_before(x, flow, owners), "before", follows)
    except _Skip as e:
        reason_before = str(e)
    try:
        return _Plan(name, bn, [_layer_after(bn, y, flow, owners)], "after", follows)
    except _Skip as e:
        return SkippedBN(name, f"not into the layer before ({reason_before}); not into the layer after ({e})", follows)


def _bn_call(bn: _BatchNorm, flow: Dataflow) -> Call:
    """The one F.batch_norm call that uses this module's running statistics in eval mode."""
    if bn.running_mean is None or bn.running_var is None:
        raise _Skip("no running statistics (track_running_stats=False): it normalises with batch statistics")
    if _replacement(bn) is None:
        raise _Skip(f"{type(bn).__name__} overrides forward(); only torch's BatchNorm and timm's BatchNormAct2d fold")
    calls = flow.uses(bn.running_mean)
    if not calls:
        raise _Skip("not called in the forward pass")
    if len(calls) > 1:
        raise _Skip(f"called {len(calls)} times per forward pass (a shared module)")
    call = calls[0]
    own = (
        call.arg("running_var") is bn.running_var
        and call.arg("weight") is bn.weight
        and call.arg("bias") is bn.bias
        and float(call.arg("eps")) == bn.eps
    )
    if call.func not in BATCH_NORM_FUNCS or not own or call.arg("training"):
        raise _Skip("its forward does not call F.batch_norm with its own statistics in eval mode")
    return call


def _follows_layer(x: torch.Tensor, flow: Dataflow) -> bool:
    p = flow.producer.get(id(x))
    if p is None:
        return False
    if p.func in CAT_FUNCS:
        return all(
            flow.producer.get(id(t)) is not None and flow.producer[id(t)].func in LAYER_FUNCS for t in p.arg("tensors")
        )
    return p.func in LAYER_FUNCS


def _layers_before(x: torch.Tensor, flow: Dataflow, owners: dict) -> list[tuple[str, nn.Module, slice]]:
    """The layer (or the concat of layers, along channels) whose output IS the BN's input, if exclusively its."""
    p = flow.producer.get(id(x))
    if p is None or p.func in BATCH_NORM_FUNCS:
        raise _Skip("its input is not the output of a conv/linear layer")
    if p.func in LAYER_FUNCS:
        _only_consumer(x, flow, f"the {p.name} output")
        return [(*_owned_layer(p, flow, owners), _output_channels_ok(p, x))]
    parts = p.arg("tensors")
    producers = [flow.producer.get(id(t)) for t in parts]
    if any(q is None or q.func not in LAYER_FUNCS for q in producers):
        raise _Skip("its input is a concat of tensors that are not all conv/linear outputs")
    dim = p.arg("dim", 0)
    if dim % x.ndim != 1:
        raise _Skip(f"its input is a concat along dim {dim}, not along channels")
    _only_consumer(x, flow, "the concat of layer outputs")
    layers, start = [], 0
    for part, q in zip(parts, producers, strict=True):
        _only_consumer(part, flow, f"a concatenated {q.name} output")
        _output_channels_ok(q, part)
        layers.append((*_owned_layer(q, flow, owners), slice(start, start + part.shape[1])))
        start += part.shape[1]
    return layers


def _only_consumer(t: torch.Tensor, flow: Dataflow, what: str) -> None:
    uses = flow.uses(t)
    if len(uses) != 1:
        raise _Skip(f"{what} feeds {len(uses)} ops ({_op_names(uses)}), not only this BN")


def _op_names(calls: list[Call]) -> str:
    names = [c.name for c in calls]
    return ", ".join(f"{n} x{names.count(n)}" if names.count(n) > 1 else n for n in sorted(set(names)))


def _owned_layer(call: Call, flow: Dataflow, owners: dict) -> tuple[str, nn.Module]:
    """The conv / linear module whose OWN parameters this call used, used by this call alone."""
    weight, bias = call.arg("weight"), call.arg("bias")
    name, layer = owners.get(id(weight), (None, None))
    if layer is None or layer.weight is not weight or bias is not layer.bias:
        raise _Skip(f"the {call.name} does not use a layer's own weight and bias (e.g. weight standardisation)")
    for p in (weight, bias):
        if p is not None and len(flow.uses(p)) != 1:
            raise _Skip(f"layer {name} is used {len(flow.uses(p))} times per forward pass (shared or tied weights)")
    return name, layer


def _output_channels_ok(call: Call, out: torch.Tensor) -> slice:
    """BN normalises dim 1: check the layer's output channels are on dim 1 (not so for a Linear on 3-D input)."""
    if call.func in LINEAR_FUNCS and out.ndim != 2:
        raise _Skip(
            f"the Linear output is {out.ndim}-D {tuple(out.shape)}: BN normalises dim 1 ({out.shape[1]}), "
            f"the Linear's features are the last dim ({out.shape[-1]})"
        )
    if call.func not in LINEAR_FUNCS and out.ndim != call.arg("weight").ndim:
        raise _Skip(f"the {call.name} ran on an unbatched input, so dim 1 is not its channels")
    return slice(None)


def _layer_after(bn: _BatchNorm, y: torch.Tensor, flow: Dataflow, owners: dict) -> tuple[str, nn.Module, slice]:
    """The Linear / unpadded conv that alone reads the BN's output, if folding into its inputs is exact."""
    outputs = flow.module_outputs.get(id(bn), [])
    if not (len(outputs) == 1 and outputs[0] is y):
        raise _Skip(f"an activation or dropout follows the normalisation inside {type(bn).__name__}")
    uses = flow.uses(y)
    if len(uses) != 1:
        raise _Skip(f"its output feeds {len(uses)} ops ({_op_names(uses)})")
    c = uses[0]
    if c.func in CONV_TRANSPOSE_FUNCS:
        raise _Skip("it feeds a transposed conv (border outputs would get fewer terms of the BN's shift)")
    if c.func not in CONV_FUNCS and c.func not in LINEAR_FUNCS:
        raise _Skip(f"it feeds {c.name}, not a conv/linear layer")
    if c.arg("input") is not y:
        raise _Skip(f"it is not the input of the {c.name}")
    name, layer = _owned_layer(c, flow, owners)
    if c.func in LINEAR_FUNCS and y.ndim != 2:
        raise _Skip(f"the Linear reads a {y.ndim}-D input: BN channels (dim 1) are not its features (last dim)")
    if c.func in CONV_FUNCS:
        padding = c.arg("padding", 0)
        if padding != "valid" and any(torch.as_tensor(padding).flatten().tolist()):
            raise _Skip("the next conv zero-pads its input, and the padded zeros would not get the BN's shift")
        if y.ndim != layer.weight.ndim:
            raise _Skip(f"the {c.name} ran on an unbatched input")
    return name, layer, slice(None)


@torch.no_grad()
def _compare(folded: nn.Module, example_input: Any, reference: Any) -> tuple[float, float]:
    """max |folded - original| over all output tensors, and max |original| (the output scale)."""
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    new = [t for t in tree_flatten(folded(*inputs))[0] if isinstance(t, torch.Tensor)]
    ref = [t for t in tree_flatten(reference)[0] if isinstance(t, torch.Tensor)]
    diff = max(((a.double() - b.double()).abs().max().item() for a, b in zip(new, ref, strict=True)), default=0.0)
    scale = max((b.double().abs().max().item() for b in ref), default=0.0)
    return diff, scale
