"""The one eval-mode context: every module in eval inside, each module's OWN mode back after (even on error)."""

from __future__ import annotations

import pytest
from torch import nn

from ltrain.models.network import eval_mode_restored
from ltrain.models.surgery import _head_in_features


def _mixed() -> nn.Sequential:
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 3)).train()
    net[1].eval()  # a frozen BatchNorm a FreezeSchedule holds in eval while the rest trains
    return net


def test_each_module_gets_its_own_mode_back_even_on_error():
    net = _mixed()
    with pytest.raises(RuntimeError), eval_mode_restored(net):
        assert not any(m.training for m in net.modules())
        raise RuntimeError("boom")
    assert [m.training for m in net.modules()] == [True, True, False, True, True]


def test_measuring_the_head_input_keeps_a_frozen_batch_norm_in_eval():
    import timm

    net = timm.create_model("test_resnet", num_classes=5).train()
    frozen_bn = next(m for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    frozen_bn.eval()
    modes = [m.training for m in net.modules()]
    assert _head_in_features(net, (3, 32, 32)) == net.get_classifier().in_features
    assert [m.training for m in net.modules()] == modes  # was: every module reset to the top-level flag
