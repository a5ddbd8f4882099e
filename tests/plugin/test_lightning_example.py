"""Lightning's own transfer-learning example (``feature_extractor`` + ``classifier``) with FreezeSchedule and the cache."""

from __future__ import annotations

import pytest
import torch

from ltrain.callbacks import FreezeSchedule, FrozenFeatureCache
from ltrain.callbacks.epoch_seed import EpochSeed
from ltrain.errors import LtrainError
from tests.plugin.outside import TransferLearningExample, digit_loaders, tiny_resnet, trainer

# timm's resnet children, as the example's nn.Sequential numbers them: conv1 bn1 act1 maxpool layer1..4 pool
GROUPS = {
    "stem": ["feature_extractor.0", "feature_extractor.1"],
    "layer1": ["feature_extractor.4"],
    "layer2": ["feature_extractor.5"],
    "layer3": ["feature_extractor.6"],
    "layer4": ["feature_extractor.7"],
    "head": ["classifier"],
}
PHASES = [{"trainable": "head"}, {"at_epoch": 1, "trainable": "top:2", "lr_scale": 0.1}]
FROZEN = tuple(f"feature_extractor.{i}." for i in (0, 1, 4, 5, 6))  # stem..layer3: frozen in both phases


def _module() -> TransferLearningExample:
    module = TransferLearningExample(tiny_resnet(0), num_target_classes=10, lr=1e-2)
    torch.manual_seed(1)
    module.classifier.reset_parameters()
    return module


def _fit(cache: FrozenFeatureCache | None) -> tuple[list[list[str]], dict[str, torch.Tensor]]:
    module = _module()
    seen: list[list[str]] = []

    class Record(EpochSeed):
        def on_train_epoch_start(self, trainer, pl_module):
            super().on_train_epoch_start(trainer, pl_module)
            seen.append(sorted(n for n, p in pl_module.named_parameters() if p.requires_grad))

    train, val = digit_loaders(n_train=96, n_val=32)
    torch.manual_seed(0)
    schedule = FreezeSchedule(PHASES, groups=GROUPS, model_attr=None)
    trainer([schedule, *([cache] if cache else []), Record(0)], epochs=2).fit(module, train, val)
    return seen, {k: v.clone() for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def uncached():
    # module-scoped fixtures run before conftest's one-thread autouse fixture; the cached runs use one thread,
    # and a different thread count alone moves these weights by ~7e-5 (another summation order)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield _fit(None)
    finally:
        torch.set_num_threads(before)


def test_trainable_set_per_phase_follows_the_explicit_groups(uncached):
    seen, _ = uncached
    assert seen[0] == ["classifier.bias", "classifier.weight"]
    assert seen[1] == sorted(
        ["classifier.bias", "classifier.weight"]
        + [n for n, _ in _module().named_parameters() if n.startswith("feature_extractor.7.")]
    )


def test_frozen_weights_and_bn_statistics_stay_bit_identical_and_the_rest_trains(uncached):
    _, end = uncached
    start = _module().state_dict()
    frozen = [k for k in start if k.startswith(FROZEN)]
    assert len(frozen) > 20
    for name in frozen:
        assert torch.equal(end[name], start[name]), name
    for trained in ("classifier.weight", "feature_extractor.7.0.conv1.weight"):
        assert not torch.equal(end[trained], start[trained]), trained


def test_cached_equals_uncached_with_the_cache_on_the_feature_extractor(uncached):
    seen, plain = uncached
    cache = FrozenFeatureCache(model_attr="feature_extractor")
    cached_seen, cached = _fit(cache)
    assert cache.sources == {"train": "computed", "val": "computed"}  # epoch 0 trained from the cache
    assert cache.dropped_at_epoch == 1  # layer4 (inside the cached trunk) unfroze: the rest runs uncached
    assert cached_seen == seen
    for name, value in plain.items():
        torch.testing.assert_close(cached[name], value, rtol=0, atol=1e-5, msg=name)


def test_the_cache_on_the_whole_module_refuses_before_the_first_step_naming_model_attr():
    module = _module()
    start = {k: v.clone() for k, v in module.state_dict().items()}
    train, _ = digit_loaders(n_train=64)
    schedule = FreezeSchedule(PHASES[:1], groups=GROUPS, model_attr=None)
    with pytest.raises(LtrainError, match=r"model_attr='feature_extractor'"):
        trainer([schedule, FrozenFeatureCache()], epochs=1).fit(module, train)
    assert all(torch.equal(v, start[k]) for k, v in module.state_dict().items())  # no step ran
