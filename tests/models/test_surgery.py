"""Head surgery: new output layer, dropped top groups, added dense layers — on the MLP and timm models."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from ltrain.errors import LtrainError
from ltrain.models import build_mlp, build_model, layer_groups
from ltrain.models.surgery import add_dense_layers, apply_surgery, drop_top_groups, replace_head

DIGIT = (1, 28, 28)


def test_dropping_the_top_two_hidden_groups_keeps_the_lower_weights_and_refits_the_head():
    model = build_mlp(784, 5, hidden=(100, 100, 100, 100, 50))
    lower = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("hidden0", "hidden1", "hidden2"))}
    drop_top_groups(model, 2, num_classes=3, input_shape=DIGIT)
    assert [g.name for g in layer_groups(model)] == ["hidden0", "hidden1", "hidden2", "head"]
    assert model.head.in_features == 100 and model.head.out_features == 3
    assert model(torch.randn(4, *DIGIT)).shape == (4, 3)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in lower.items())


def test_dropping_resnet_stages_rebuilds_the_classifier_for_the_narrower_features():
    model = timm.create_model("resnet10t", num_classes=10, pretrained=False)
    drop_top_groups(model, 1, num_classes=4, input_shape=(3, 32, 32))
    assert isinstance(model.layer4, nn.Identity)
    assert model.fc.in_features == 256 == model.num_features
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    assert [g.name for g in layer_groups(model)][-2:] == ["layer3", "head"]


def test_dropping_every_group_below_the_head_is_refused_with_the_group_list():
    with pytest.raises(LtrainError, match=r"(?s)drop_top=5.*5 groups below it:\n.*hidden0"):
        drop_top_groups(build_mlp(784, 5), 5, num_classes=3, input_shape=DIGIT)


def test_added_dense_layers_sit_in_the_head_group_before_a_new_output_layer():
    model = timm.create_model("resnet10t", num_classes=10, pretrained=False)
    add_dense_layers(model, [64, 32], num_classes=2, input_shape=(3, 32, 32))
    assert [m.__class__.__name__ for m in model.fc] == ["Linear", "ELU", "Linear", "ELU", "Linear"]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 2)
    head = layer_groups(model)[-1]
    assert head.name == "head" and len(head.param_names) == 6


def test_reset_head_gives_a_fresh_output_layer_and_keeps_the_rest():
    model = build_mlp(784, 5)
    old_head, body = model.head.weight.clone(), model.hidden4.linear.weight.clone()
    replace_head(model, 5, DIGIT)
    assert not torch.equal(model.head.weight, old_head) and torch.equal(model.hidden4.linear.weight, body)
    tm = timm.create_model("resnet10t", num_classes=10, pretrained=False)
    replace_head(tm, 7, (3, 32, 32))
    assert tm.fc.out_features == 7


def test_model_config_surgery_is_applied_by_build_model(cfg_factory):
    cfg = cfg_factory("model.surgery.drop_top=1", "model.surgery.add_dense=[16]")
    model = build_model(cfg.model, num_classes=3, input_shape=DIGIT)
    assert isinstance(model.hidden4, nn.Identity)
    assert [type(m).__name__ for m in model.head] == ["Linear", "ELU", "Linear"] and model.head[0].in_features == 100
    assert model(torch.randn(2, *DIGIT)).shape == (2, 3)
    default = build_model(cfg_factory().model, num_classes=3, input_shape=DIGIT)
    assert isinstance(default.head, nn.Linear) and not isinstance(default.hidden4, nn.Identity)


def test_apply_surgery_without_options_changes_nothing():
    model = build_mlp(784, 5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    apply_surgery(model, 5, DIGIT)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
