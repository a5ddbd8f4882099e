"""model.channels_last: NHWC weights change the kernels, not the network; the cache and the zoo keep working."""

from __future__ import annotations

import timm
import torch

from ltrain.callbacks import FreezeSchedule, FrozenFeatureCache
from ltrain.models import build_model
from ltrain.zoo import Zoo
from tests.callbacks.test_cache import TOL, _fit, rgb_digits  # noqa: F401 (a fixture)


def _pair(seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    nchw = build_model({"name": "test_resnet"}, 10, (3, 32, 32)).eval()
    torch.manual_seed(seed)
    nhwc = build_model({"name": "test_resnet", "channels_last": True}, 10, (3, 32, 32)).eval()
    return nchw, nhwc


def test_channels_last_weights_give_the_nchw_models_outputs():
    nchw, nhwc = _pair()
    conv = nhwc.conv1[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert nchw.conv1[0].weight.is_contiguous()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(nhwc(x), nchw(x), rtol=0, atol=1e-5)


def test_cached_training_of_a_channels_last_model_ends_where_uncached_training_ends(rgb_digits, tmp_path):  # noqa: F811
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=10, drop_rate=0.3).to(memory_format=torch.channels_last)
    schedule = [{"trainable": "head"}]
    plain, _, _ = _fit(model, rgb_digits, [FreezeSchedule(schedule)], epochs=2)
    for storage in ("memory", "disk"):
        cache = FrozenFeatureCache(storage=storage, directory=str(tmp_path / storage))
        cached, _, calls = _fit(model, rgb_digits, [FreezeSchedule(schedule), cache], epochs=2)
        assert calls == 0, storage
        torch.testing.assert_close(cached.get_classifier().weight, plain.get_classifier().weight, **TOL)
    assert cached.get_classifier().weight.is_contiguous()  # a 2-D weight: no NHWC form, left as it was
    assert cached.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_a_channels_last_model_goes_into_the_zoo_and_comes_back_with_the_same_outputs():
    _, nhwc = _pair(1)
    zoo = Zoo()
    zoo.push(nhwc, "nhwc", model_cfg={"name": "test_resnet", "kwargs": {}}, input_shape=(3, 32, 32))
    loaded = zoo.load_model("nhwc").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), nhwc(x), rtol=0, atol=1e-5)
