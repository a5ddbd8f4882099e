"""layer_groups: every parameter in exactly one group, groups ordered bottom -> top, for timm and plain models."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from ltrain.models import build_mlp, format_groups, layer_groups

# (timm architecture, extra kwargs, input size): ten families, tiny variants, random init.
# (swin, coat, hrnet, inception_v3, poolformer were checked by hand too; left out to keep the suite fast.)
ARCHITECTURES = [
    ("resnet10t", {}, 32),
    ("efficientnet_b0", {}, 32),
    ("mobilenetv3_small_050", {}, 32),
    ("convnext_atto", {}, 32),
    ("regnetx_002", {}, 32),
    ("densenet121", {}, 32),
    ("vit_tiny_patch16_224", {"img_size": 32}, 32),
    ("ghostnet_050", {}, 32),
    ("edgenext_xx_small", {}, 64),
    ("levit_128s", {"img_size": 64}, 64),
]


def execution_order(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Names of the parameters of each module, in the order the modules first run in a forward pass."""
    seen: list[str] = []
    hooks = []
    for name, module in model.named_modules():
        own = [f"{name}.{n}" if name else n for n, _ in module.named_parameters(recurse=False)]
        if own:
            hooks.append(
                module.register_forward_pre_hook(lambda m, inp, own=own: seen.extend(n for n in own if n not in seen))
            )
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("arch,kwargs,size", ARCHITECTURES, ids=[a[0] for a in ARCHITECTURES])
def test_timm_groups_partition_parameters_and_run_bottom_to_top(arch, kwargs, size):
    model = timm.create_model(arch, pretrained=False, num_classes=3, **kwargs)
    groups = layer_groups(model)
    names = [n for n, _ in model.named_parameters()]
    grouped = [n for g in groups for n in g.param_names]
    assert sorted(grouped) == sorted(names) and len(grouped) == len(set(grouped))  # a partition
    assert len(groups) >= 4 and len({g.name for g in groups}) == len(groups)
    assert groups[-1].name == "head"
    head = model.get_classifier()
    head = head if isinstance(head, tuple) else (head,)
    assert {id(p) for h in head for p in h.parameters()} == {
        id(p) for n, p in model.named_parameters() if n in groups[-1].param_names
    }
    # bottom -> top: as the forward pass reaches each layer, its group index never goes down
    index = {n: i for i, g in enumerate(groups) for n in g.param_names}
    order = [index[n] for n in execution_order(model, torch.randn(1, 3, size, size))]
    assert order == sorted(order), f"{arch}: groups {[g.name for g in groups]} out of forward order {order}"
    assert order[0] == 0 and order[-1] == len(groups) - 1


def test_mlp_groups_are_its_hidden_blocks_then_head():
    model = build_mlp(784, 10, hidden=(100,) * 5)
    groups = layer_groups(model)
    assert [g.name for g in groups] == ["hidden0", "hidden1", "hidden2", "hidden3", "hidden4", "head"]
    assert groups[0].param_names == ("hidden0.linear.weight", "hidden0.linear.bias")


def test_plain_module_falls_back_to_child_order_and_root_parameters_come_first():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))
            self.body = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
            self.out = nn.Linear(4, 2)

    groups = layer_groups(Net())
    assert [(g.name, len(g)) for g in groups] == [("root", 1), ("body", 4), ("head", 2)]


def test_format_groups_lists_names_and_parameter_counts():
    text = format_groups(build_mlp(784, 10, hidden=(100, 50)))
    rows = {line.split()[-3]: line.split()[-1] for line in text.splitlines()[1:-1]}
    assert rows == {"hidden0": "78,500", "hidden1": "5,050", "head": "510", "total": "84,060"}
