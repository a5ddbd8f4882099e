"""The folding arithmetic: a BN in eval mode is y = s * x + t per channel; push s and t into a neighbour layer.

SPEC: if the layer computes XW + b and BN computes gamma * (XW + b - mu) / sigma + beta, then
W' = gamma * W / sigma and b' = gamma * (b - mu) / sigma + beta, with sigma = sqrt(running_var + eps).
Everything is computed in float32 at least (float64 models stay float64) and cast back to the layer's dtype
only at the end: folding in fp16/bf16 would round gamma / sigma and the product before the final cast.

torch has ``torch.nn.utils.fusion.fuse_conv_bn_weights`` / ``fuse_linear_bn_weights``, but (torch 2.14) the
first raises a shape error on a transposed conv with groups > 1, the second a TypeError on a BN with
affine=False, and neither folds a BN into the layer that FOLLOWS it; hence these helpers.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.promote_types(t.dtype, torch.float32)


def bn_scale_shift(bn: _BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, t) with bn(x) = s * x + t per channel in eval mode, in float32 (or float64)."""
    dt = _compute_dtype(bn.running_var)
    mean, var = bn.running_mean.to(dt), bn.running_var.to(dt)
    gamma = bn.weight.to(dt) if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.to(dt) if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    return scale, beta - mean * scale


def _write(layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """Store the folded weight/bias in the layer's own dtype (adds a bias parameter if it had none)."""
    layer.weight.copy_(weight.to(layer.weight.dtype))
    if layer.bias is None:
        layer.bias = nn.Parameter(bias.to(layer.weight.dtype), requires_grad=layer.weight.requires_grad)
    else:
        layer.bias.copy_(bias.to(layer.bias.dtype))


def _weight_and_bias(layer: nn.Module, out_channels: int, dt: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    w = layer.weight.to(dt)
    b = layer.bias.to(dt) if layer.bias is not None else torch.zeros(out_channels, dtype=dt, device=w.device)
    return w, b


@torch.no_grad()
def fold_into_outputs(layer: nn.Module, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """Make ``layer`` compute s * layer(x) + t (per output channel): the BN that FOLLOWS it disappears.

    Conv / Linear weights hold output channels on dim 0. A transposed conv's weight is
    (in, out / groups, *k): output channel g * (out / groups) + j lives at [group g's inputs, j].
    """
    dt = _compute_dtype(scale)
    if isinstance(layer, nn.modules.conv._ConvTransposeNd):
        g = layer.groups
        w, b = _weight_and_bias(layer, layer.out_channels, dt)
        k = w.shape[2:]
        w = w.reshape(g, w.shape[0] // g, w.shape[1], *k) * scale.reshape(g, 1, -1, *[1] * len(k))
        w = w.reshape(layer.weight.shape)
    else:
        w, b = _weight_and_bias(layer, layer.weight.shape[0], dt)
        w = w * scale.reshape(-1, *[1] * (w.ndim - 1))
    _write(layer, w, b * scale + shift)


@torch.no_grad()
def fold_into_inputs(layer: nn.Module, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """Make ``layer`` compute layer(s * x + t) (per input channel): the BN that PRECEDES it disappears.

    Exact only for a Linear on 2-D input and an UNPADDED conv (the caller checks): with zero padding the
    padded border would not receive t. Conv weights are (out, in / groups, *k); output channel o reads input
    channels of group o // (out / groups).
    """
    dt = _compute_dtype(scale)
    out = layer.weight.shape[0]
    w, b = _weight_and_bias(layer, out, dt)
    if isinstance(layer, nn.Linear):
        _write(layer, w * scale.reshape(1, -1), b + w @ shift)
        return
    g, in_per_group = layer.groups, w.shape[1]
    group_of_output = torch.arange(out, device=w.device) // (out // g)
    s = scale.reshape(g, in_per_group)[group_of_output]  # (out, in / groups)
    t = shift.reshape(g, in_per_group)[group_of_output]
    b = b + (w.flatten(2).sum(2) * t).sum(1)
    _write(layer, w * s.reshape(*s.shape, *[1] * (w.ndim - 2)), b)
