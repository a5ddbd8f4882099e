"""Non-trivial BatchNorm statistics, so that a fold is proven on numbers that would expose a wrong formula.

A freshly built model has running_mean 0, running_var 1, gamma 1 (or 0: timm zero-initialises the last BN
of residual blocks) and beta 0: folding it barely changes anything, right or wrong. Tests and the bench
randomise every BN first.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@torch.no_grad()
def randomize_batchnorm_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Draw every BN's running mean ~ N(0, 0.5), var ~ U(0.5, 2), gamma ~ U(0.5, 1.5), beta ~ N(0, 0.3); in place."""
    gen = torch.Generator().manual_seed(seed)
    for bn in model.modules():
        if not isinstance(bn, _BatchNorm):
            continue
        n = bn.num_features
        if bn.running_mean is not None:
            bn.running_mean.copy_(0.5 * torch.randn(n, generator=gen))
            bn.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=gen))
        if bn.weight is not None:
            bn.weight.copy_(0.5 + torch.rand(n, generator=gen))
            bn.bias.copy_(0.3 * torch.randn(n, generator=gen))
    return model
