"""FreezeSchedule inside outside code: compiled networks, explicit groups, no silent 'head', BN kept frozen."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ltrain.callbacks import FreezeSchedule
from ltrain.callbacks.epoch_seed import EpochSeed
from ltrain.errors import LtrainError
from ltrain.models.groups import format_groups, groups_from_patterns
from tests.plugin.outside import BackboneClassifier, NetModule, digit_loaders, tiny_resnet, trainer

PHASES = [{"trainable": "head"}, {"at_epoch": 1, "trainable": "top:2", "lr_scale": 0.1}]


def _run(net: nn.Module, compiled: bool, **kw):
    module = NetModule(torch.compile(net, backend="eager") if compiled else net, lr=1e-2)
    seen: list[list[str]] = []

    class Record(EpochSeed):
        def on_train_epoch_start(self, trainer, pl_module):
            super().on_train_epoch_start(trainer, pl_module)
            seen.append(sorted(n for n, p in net.named_parameters() if p.requires_grad))

    train, val = digit_loaders(n_train=64, n_val=32)
    torch.manual_seed(0)
    trainer([FreezeSchedule(PHASES, **kw), Record(0)], epochs=2).fit(module, train, val)
    return seen, {k: v.clone() for k, v in net.state_dict().items()}


def test_compiled_timm_model_trains_the_same_set_per_phase_and_keeps_frozen_weights_bit_identical():
    start = tiny_resnet().state_dict()
    plain_sets, plain = _run(tiny_resnet(), compiled=False)
    compiled_sets, compiled = _run(tiny_resnet(), compiled=True)
    assert compiled_sets == plain_sets and plain_sets[0] == ["fc.bias", "fc.weight"]
    assert any(n.startswith("layer4") for n in plain_sets[1]) and not any(n.startswith("stem") for n in plain_sets[1])
    for name, value in start.items():
        if name.startswith(("conv1", "bn1", "layer1", "layer2", "layer3")) and "num_batches" not in name:
            assert torch.equal(compiled[name], value), name  # frozen (weights and BN statistics) all along
            assert torch.equal(plain[name], value), name


def test_bn_frozen_keeps_batch_norm_fixed_after_its_group_unfreezes():
    start = tiny_resnet().state_dict()
    sets, end = _run(tiny_resnet(), compiled=False, bn="frozen")
    assert not any(".bn" in n for s in sets for n in s)
    layer4_bn = [k for k in start if k.startswith("layer4") and ".bn" in k and "num_batches" not in k]
    assert layer4_bn and all(torch.equal(end[k], start[k]) for k in layer4_bn)
    assert not torch.equal(end["layer4.0.conv1.weight"], start["layer4.0.conv1.weight"])  # the group did train


def _backbone_module() -> BackboneClassifier:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
    return BackboneClassifier(backbone, nn.Linear(32, 10))


def test_explicit_groups_split_a_backbone_that_timm_cannot_group():
    groups = {"low": ["backbone.1"], "high": ["backbone.3"], "head": ["classifier"]}
    module = _backbone_module()
    train, _ = digit_loaders(n_train=64)
    schedule = FreezeSchedule([{"trainable": "top:2"}], groups=groups)
    trainer([schedule], epochs=1).fit(module, train)
    assert schedule.trainable_groups() == ["high", "head"]
    assert not module.backbone[1].weight.requires_grad and module.backbone[3].weight.requires_grad


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ({"low": ["backbone.1"], "head": ["classifier"]}, r"1 parameter\(s\)|2 parameter\(s\) in no group"),
        ({"low": ["backbone.*"], "head": ["backbone.3", "classifier"]}, "in two groups"),
        ({"low": ["backbone.1"], "head": ["backbone.3"], "top": ["classifier"]}, "classifier's parameters are"),
    ],
)
def test_a_bad_group_spec_is_refused_with_the_table(groups, message):
    with pytest.raises(LtrainError, match=message) as err:
        groups_from_patterns(_backbone_module(), groups)
    assert "What the patterns matched" in str(err.value)


def test_a_trunk_at_model_attr_has_no_silent_head():
    module = _backbone_module()
    train, _ = digit_loaders(n_train=64)
    with pytest.raises(LtrainError, match="no classifier"):
        trainer([FreezeSchedule([{"trainable": "head"}], model_attr="backbone")], epochs=1).fit(module, train)
    assert "no classifier found" in format_groups(module.backbone)


def test_ltrain_groups_prints_the_explicit_groups_it_would_use_and_refuses_bad_ones(cfg_factory):
    from ltrain.cli.groups import describe_groups

    spec = "freeze.groups={low: [hidden0, hidden1], high: [hidden2, hidden3, hidden4], head: [head]}"
    text = describe_groups(cfg_factory("freeze=default", spec))
    assert "freeze.groups" in text and [line.split()[1] for line in text.splitlines()[2:5]] == ["low", "high", "head"]
    with pytest.raises(LtrainError, match="in no group"):
        describe_groups(cfg_factory("freeze=default", "freeze.groups={low: [hidden0], head: [head]}"))
