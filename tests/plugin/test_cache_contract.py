"""FrozenFeatureCache is exact inside outside code, next to MaxNorm and FreezeSchedule in any order, or refuses."""

from __future__ import annotations

import itertools

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from ltrain.callbacks import FreezeSchedule, FrozenFeatureCache, MaxNorm
from ltrain.callbacks.epoch_seed import EpochSeed
from ltrain.errors import LtrainError
from tests.plugin.outside import NetModule, digit_loaders, mlp, trainer

TOL = {"rtol": 0, "atol": 1e-5}
NAMES = ("freeze", "max_norm", "cache")


def _callbacks(order: tuple[str, ...]) -> tuple[list[L.Callback], FrozenFeatureCache]:
    made = {
        "freeze": FreezeSchedule([{"trainable": "top:2"}]),
        "max_norm": MaxNorm(max_norm=0.6),
        "cache": FrozenFeatureCache(),
    }
    return [made[n] for n in order], made["cache"]


def _fit(callbacks: list[L.Callback], val: bool = True, epochs: int = 2, **kw) -> NetModule:
    module = NetModule(mlp(0), lr=3e-2)
    train, val_loader = digit_loaders()
    torch.manual_seed(0)
    t = trainer([EpochSeed(0), *callbacks], epochs=epochs, **kw)
    t.fit(module, train_dataloaders=train, val_dataloaders=val_loader if val else None)
    return module


@pytest.fixture(scope="module")
def uncached() -> dict[str, torch.Tensor]:
    callbacks, _ = _callbacks(("freeze", "max_norm"))
    return {k: v.clone() for k, v in _fit(callbacks).state_dict().items()}


@pytest.mark.parametrize("order", list(itertools.permutations(NAMES)), ids="-".join)
def test_cached_equals_uncached_with_max_norm_and_one_cycle_in_every_callback_order(order, uncached):
    callbacks, cache = _callbacks(order)
    got = _fit(callbacks).state_dict()
    assert cache.sources == {"train": "computed", "val": "computed"}
    for name, value in uncached.items():
        torch.testing.assert_close(got[name], value, **TOL, msg=name)
    assert not torch.equal(got["net.7.weight"], NetModule(mlp(0)).state_dict()["net.7.weight"])  # it trained


def test_max_norm_leaves_frozen_weights_bit_identical(uncached):
    before = NetModule(mlp(0)).state_dict()
    for frozen in ("net.1.weight", "net.3.weight"):
        assert torch.equal(uncached[frozen], before[frozen]), frozen
    norms = uncached["net.5.weight"].norm(dim=1)
    assert norms.max() <= 0.6 * (1 + 1e-6) and before["net.5.weight"].norm(dim=1).max() > 0.6  # it was active


class ScaleFrozen(L.Callback):
    """Rescales a frozen weight at a chosen hook: what MaxNorm used to do to frozen layers."""

    def __init__(self, hook: str):
        self.hook = hook
        setattr(self, hook, self._scale)

    def _scale(self, trainer, pl_module, *args):
        if trainer.current_epoch == 0 and (self.hook != "on_train_batch_end" or args[-1] == 2):
            with torch.no_grad():
                pl_module.net[1].weight.mul_(0.9)


def test_a_frozen_weight_changed_at_an_epoch_end_is_recomputed_and_stays_exact():
    freeze = {"trainable": "top:2"}
    plain = _fit([FreezeSchedule([freeze]), ScaleFrozen("on_train_epoch_end")]).state_dict()
    cache = FrozenFeatureCache()
    cached = _fit([cache, FreezeSchedule([freeze]), ScaleFrozen("on_train_epoch_end")]).state_dict()
    assert cache.recomputed == [1]
    for name, value in plain.items():
        torch.testing.assert_close(cached[name], value, **TOL, msg=name)


def test_a_frozen_weight_changed_mid_epoch_is_refused_naming_it():
    with pytest.raises(LtrainError, match=r"frozen 1\.weight .* changed during epoch 0, before batch 3"):
        _fit([FreezeSchedule([{"trainable": "top:2"}]), FrozenFeatureCache(), ScaleFrozen("on_train_batch_end")])


def test_without_a_val_loader_the_cache_trains_from_the_train_split_only():
    cache = FrozenFeatureCache()
    plain = _fit([FreezeSchedule([{"trainable": "top:2"}])], val=False, epochs=1).state_dict()
    cached = _fit([FreezeSchedule([{"trainable": "top:2"}]), cache], val=False, epochs=1).state_dict()
    assert cache.sources == {"train": "computed"}
    for name, value in plain.items():
        torch.testing.assert_close(cached[name], value, **TOL, msg=name)


class Transformed(Dataset):
    def __init__(self, base, transform):
        self.base, self.transform = base, transform

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return self.transform(x), y


def _fit_transformed(transform, cache):
    train, _ = digit_loaders()
    loader = DataLoader(Transformed(train.dataset, transform), batch_size=32, shuffle=True)
    torch.manual_seed(0)
    module = NetModule(mlp(0))
    trainer([FreezeSchedule([{"trainable": "top:2"}]), *([cache] if cache else [])], epochs=1).fit(module, loader)
    return module


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_deterministic_torchvision_transforms_are_accepted_random_ones_refused_by_name(version):
    if version == "v1":
        from torchvision import transforms as T
    else:
        from torchvision.transforms import v2 as T
    fixed = T.Compose([T.Resize(28, antialias=True), T.CenterCrop(28), T.Normalize([0.13], [0.31])])
    cache = FrozenFeatureCache()
    cached = _fit_transformed(fixed, cache)
    plain = _fit_transformed(fixed, None)
    assert cache.sources == {"train": "computed"}
    torch.testing.assert_close(cached.net[7].weight, plain.net[7].weight, **TOL)
    random = T.Compose([T.Normalize([0.13], [0.31]), T.RandomResizedCrop(28, antialias=True)])
    with pytest.raises(LtrainError, match=r"is random \(RandomResizedCrop"):
        _fit_transformed(random, FrozenFeatureCache())
