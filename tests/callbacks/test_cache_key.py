"""The frozen-feature cache's key and fingerprint (ltrain.callbacks.cache_data.cache_key, cache.Fingerprint).

A disk cache file is reused only under the same key, so the key must be equal for the same frozen weights,
data, split, transform, cut and shard, and differ when any of them changes; the fingerprint must notice a
frozen tensor rewritten after the features were computed. The key parts are assembled as
``FrozenFeatureCache._fill`` assembles them (the end-to-end reuse runs in tests/callbacks/test_cache.py).
Small nets and the embedded digits, no Trainer.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ltrain.callbacks.cache import Fingerprint, _digest
from ltrain.callbacks.cache_data import cache_key
from ltrain.data.base import Arrays, ImageClassificationData, ImageTransform
from ltrain.data.embedded import MnistEmbedded, load_mnist_embedded
from ltrain.models.split import split_model

PROBE = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def frozen_net(seed: int = 0) -> nn.Sequential:
    """An MLP whose bottom (with a BatchNorm) is frozen: the cache's cut sits below ``head``."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)
    )
    net.eval()
    for p in net[:5].parameters():
        p.requires_grad_(False)
    return net


def parts(data: object = "digits", **changes) -> dict:
    """What _fill hashes besides the tensors, for the train split of one process."""
    out = {
        "data": data,
        "cut": "5",
        "model": "Sequential",
        "world_size": 1,
        "rank": 0,
        "split": "train",
        "views": 1,
        "indices": _digest(torch.arange(100)),
        "transform": repr(ImageTransform((0.13,), (0.31,))),
    }
    return out | changes


def key_of(net: nn.Module, **changes) -> str:
    split = split_model(net, PROBE)
    assert split is not None
    return cache_key(parts(**changes), split.prefix_state())


def test_the_prefix_state_is_the_frozen_part_only():
    split = split_model(frozen_net(), PROBE)
    assert split.cut == "5"  # the topmost module below the first trainable one (the ReLU after 4)
    assert sorted(split.prefix_state()) == [
        "1.bias", "1.weight", "2.bias", "2.num_batches_tracked", "2.running_mean", "2.running_var", "2.weight",
        "4.bias", "4.weight",
    ]  # fmt: skip


def test_same_frozen_weights_data_and_transform_give_the_same_key():
    net = frozen_net()
    twin = copy.deepcopy(net)  # other storages, same values
    with torch.no_grad():
        twin[6].weight.mul_(-3.0)  # the trained head is not part of what the features depend on
    key = key_of(net)
    assert len(key) == 64 and int(key, 16) >= 0
    assert key_of(twin) == key
    assert key_of(frozen_net(seed=0)) == key  # rebuilt from the same seed, in another order of parts:
    assert cache_key(dict(reversed(list(parts().items()))), split_model(net, PROBE).prefix_state()) == key


@pytest.mark.parametrize("where", ["1.weight", "2.running_mean", "4.bias"])
def test_one_ulp_in_any_frozen_tensor_changes_the_key(where):
    net = frozen_net()
    key = key_of(net)
    t = dict(net.named_parameters()) | dict(net.named_buffers())
    with torch.no_grad():
        t[where].view(-1)[0] = torch.nextafter(t[where].view(-1)[0], torch.tensor(float("inf")))
    assert key_of(net) != key


def test_the_dtype_or_shape_of_the_same_bytes_changes_the_key():
    state = {"w": torch.arange(6, dtype=torch.float32)}
    key = cache_key(parts(), state)
    assert cache_key(parts(), {"w": state["w"].view(torch.int32)}) != key
    assert cache_key(parts(), {"w": state["w"].view(2, 3)}) != key
    assert cache_key(parts(), {"v": state["w"]}) != key


@pytest.mark.parametrize(
    "change",
    [
        {"data": "other"},
        {"cut": "2"},
        {"model": "ResNet"},
        {"world_size": 2},
        {"rank": 1},
        {"split": "val"},
        {"views": 4},
        {"indices": _digest(torch.arange(1, 101))},
        {"transform": repr(ImageTransform((0.13,), (0.31,), augment="flip_crop"))},
    ],
)
def test_any_other_part_changes_the_key(change):
    assert key_of(frozen_net(), **change) != key_of(frozen_net())


def test_the_transform_repr_names_every_setting():
    base = ImageTransform((0.13,), (0.31,))
    variants = [
        ImageTransform((0.14,), (0.31,)),
        ImageTransform((0.13,), (0.30,)),
        ImageTransform((0.13,), (0.31,), size=32),
        ImageTransform((0.13,), (0.31,), channels=3),
        ImageTransform((0.13,), (0.31,), augment="flip_crop"),
    ]
    assert repr(ImageTransform((0.13,), (0.31,))) == repr(base)
    assert len({repr(v) for v in [base, *variants]}) == 6


def test_the_data_description_changes_with_the_split_subset_and_transform():
    def describe(**kw) -> dict:
        return MnistEmbedded(**kw).describe()

    base = describe(train_per_class=20)
    assert describe(train_per_class=20) == base
    for kw in ({"train_per_class": 21}, {"split_seed": 1}, {"classes": [0, 1]}, {"image_size": 32}):
        assert describe(**({"train_per_class": 20} | kw)) != base, kw
    key = key_of(frozen_net(), data=base)
    assert key_of(frozen_net(), data=describe(train_per_class=20, split_seed=1)) != key


class Shifted(ImageClassificationData):
    """An outside dataset: the embedded digits, optionally with every image one grey level brighter."""

    name = "shifted_digits"

    def __init__(self, shift: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.shift = shift

    def load_arrays(self) -> Arrays:
        x, y = load_mnist_embedded()
        return Arrays((x.int() + self.shift).clamp(0, 255).to(torch.uint8), y)


def test_other_image_content_with_the_same_description_changes_the_key():
    same = Shifted(0, train_per_class=20, standardize=False)
    brighter = Shifted(1, train_per_class=20, standardize=False)
    assert key_of(frozen_net(), data=same.describe()) != key_of(frozen_net(), data=brighter.describe())


# --- the fingerprint: a frozen tensor rewritten after the features were computed ------------------


def test_the_fingerprint_sees_value_changes_and_ignores_writes_that_keep_the_values():
    net = frozen_net()
    state = split_model(net, PROBE).prefix_state()
    fp = Fingerprint(state)
    assert fp.changed(state) == []
    with torch.no_grad():
        net[1].weight.mul_(1.0)  # version counter moves, values do not
        assert fp.changed(state) == []
        before = net[2].running_var.clone()
        net[2].running_var.add_(1e-3)
        assert fp.changed(state) == ["2.running_var"]
        net[2].running_var.copy_(before)  # written back as it was: not a change
        assert fp.changed(state) == []
    net[4].bias.data = net[4].bias.data + 1.0  # a new storage with other values
    state = split_model(net, PROBE).prefix_state()
    assert fp.changed(state) == ["4.bias"]
    assert fp.changed(state | {"extra": torch.zeros(1)})[-1] == "extra"
