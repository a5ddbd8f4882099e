"""One network lookup for every callback and function: attribute, else the module; wrappers looked through."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ltrain.errors import LtrainError
from ltrain.models import layer_groups
from ltrain.models.network import find_network, unwrap
from tests.plugin.outside import BackboneClassifier, NetModule, mlp, tiny_resnet


def test_a_compiled_timm_model_has_timm_groups_not_one_orig_mod_group():
    net = tiny_resnet()
    compiled = torch.compile(net, backend="eager")
    assert unwrap(compiled) is net
    assert [g.name for g in layer_groups(compiled)] == [g.name for g in layer_groups(net)]
    assert len(layer_groups(compiled)) > 2


def test_a_lightning_module_with_its_network_at_self_net_is_looked_through():
    net = tiny_resnet()
    assert find_network(NetModule(net)) is net
    assert find_network(NetModule(torch.compile(net, backend="eager"))) is net
    assert find_network(NetModule(net), "net") is net


def test_backbone_plus_classifier_is_the_module_itself_and_its_head_is_the_classifier():
    module = BackboneClassifier(nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU()), nn.Linear(32, 10))
    assert find_network(module) is module
    groups = layer_groups(module)
    assert [g.name for g in groups] == ["backbone", "head"] and groups[-1].param_names == (
        "classifier.weight",
        "classifier.bias",
    )


def test_a_trunk_without_classifier_has_no_head_group():
    trunk = nn.Sequential(*list(tiny_resnet().children())[:-2])  # conv... layer4, no pooling/fc
    assert "head" not in [g.name for g in layer_groups(trunk)]
    assert "head" not in [g.name for g in layer_groups(tiny_resnet(num_classes=0))]


def test_a_missing_attribute_names_the_children():
    with pytest.raises(LtrainError, match=r"NetModule.model.*\['net'\]"):
        find_network(NetModule(mlp()), "model")


def test_fold_batchnorm_accepts_a_lightning_module_and_a_compiled_network():
    from ltrain.export import fold_batchnorm

    net = tiny_resnet().eval()
    x = torch.randn(2, 1, 32, 32)
    for given in (NetModule(net), torch.compile(net, backend="eager")):
        folded, report = fold_batchnorm(given, x)
        assert report.folded and type(folded).__name__ == type(net).__name__
        torch.testing.assert_close(folded(x), net(x), rtol=1e-4, atol=1e-4)
