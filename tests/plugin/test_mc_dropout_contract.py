"""mc_dropout samples EVERY dropout a network applies in training mode, or refuses; never identical samples."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from ltrain.errors import LtrainError
from ltrain.inference import mc_dropout
from tests.plugin.outside import NetModule


class MixedDropout(nn.Module):
    """A user's network: F.dropout(..., training=self.training) in forward plus one nn.Dropout module."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(20, 64), nn.Linear(64, 64), nn.Linear(64, 5)
        self.bn = nn.BatchNorm1d(64)
        self.drop = nn.Dropout(0.3)

    def forward(self, x):
        x = F.dropout(F.relu(self.bn(self.fc1(x))), p=0.4, training=self.training)
        x = self.drop(F.relu(self.fc2(x)))
        return self.out(x)


def _reference_mc(net: nn.Module, x: torch.Tensor, samples: int) -> torch.Tensor:
    """An independent MC: train mode for the whole net, BN forced back to eval; (T, N, C) probabilities."""
    net.train()
    net.bn.eval()
    torch.manual_seed(1234)
    with torch.no_grad():
        out = torch.stack([net(x).softmax(-1) for _ in range(samples)])
    net.eval()
    return out


def test_functional_and_module_dropout_are_both_sampled_spread_matches_a_reference():
    torch.manual_seed(0)
    net = MixedDropout()
    net.bn.running_mean.uniform_(-0.5, 0.5)
    net.eval()
    x = torch.randn(64, 20)
    stats = net.bn.running_mean.clone()
    pred = mc_dropout(net, x, samples=400, seed=0)
    reference = _reference_mc(net, x, 400)
    ratio = (pred.std.mean() / reference.std(0).mean()).item()
    assert 0.8 <= ratio <= 1.25, ratio
    torch.testing.assert_close(pred.mean, reference.mean(0), atol=0.03, rtol=0)
    assert pred.path == "train_mode" and "F.dropout(p=0.4)" in pred.note
    assert not net.training and not net.bn.training  # modes restored
    assert torch.equal(net.bn.running_mean, stats)  # BN statistics untouched (eval inside)


def test_a_lightning_module_is_accepted_where_a_network_is_expected():
    torch.manual_seed(0)
    net = timm.create_model("test_resnet", num_classes=4, drop_rate=0.5).eval()
    x = torch.randn(3, 3, 32, 32)
    a = mc_dropout(NetModule(net), x, samples=8, seed=3)
    b = mc_dropout(net, x, samples=8, seed=3)
    assert torch.equal(a.samples, b.samples) and a.std.sum() > 0


def test_attention_dropout_only_vit_is_sampled_not_returned_identical():
    torch.manual_seed(0)
    vit = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=4, attn_drop_rate=0.3
    ).eval()
    x = torch.randn(2, 3, 32, 32)
    pred = mc_dropout(vit, x, samples=6, seed=0)
    assert pred.path == "train_mode" and "fused attention" in pred.note
    assert not all(torch.equal(pred.samples[0], s) for s in pred.samples[1:])
    assert all(not m.training for m in vit.modules())


def test_a_network_whose_dropout_never_changes_the_output_is_refused():
    net = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].bias.fill_(-1.0)  # ReLU(dropout(-1)) = 0 whatever the mask: every sample identical
    with pytest.raises(LtrainError, match="identical"):
        mc_dropout(net, torch.randn(5, 4), samples=4, seed=0)
