"""cache.dtype=float16 / bfloat16: half the memory or disk, NOT exact; how far from float32 it lands is measured here.

The embedded digits MLP with its bottom 4 hidden layers frozen (as in test_cache.py), 2 epochs, Adam 1e-2.
Rounding a float32 to float16 keeps 11 significant bits (relative error <= 2**-11), to bfloat16 8 bits
(<= 2**-8). After 2 epochs the trained weights are 0.5% (float16) / 1.1% (bfloat16) of the way training moved
them away from the float32 cache's (L2); the largest single weight differs by 0.02 (two Adam steps of lr).
"""

from __future__ import annotations

import pytest
import torch

from ltrain.callbacks import FreezeSchedule, FrozenFeatureCache
from ltrain.errors import LtrainError
from tests.callbacks.test_cache import _fit, _mlp, digits  # noqa: F401 (digits is a fixture)

# dtype -> (relative rounding bound of a feature, bound on |w_half - w_float32| / |w_float32 - w_start|, the
# trained weights' distance from the float32 cache's relative to how far training moved them)
BOUNDS = {"float16": (2.0**-11, 0.01), "bfloat16": (2.0**-8, 0.03)}


@pytest.fixture(scope="module")
def exact(digits):  # noqa: F811
    cache = FrozenFeatureCache()
    model, _, _ = _fit(_mlp(), digits, [FreezeSchedule([{"trainable": "top:2"}]), cache])
    return cache.cached["train"].features, model.state_dict()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("storage", ["memory", "disk"])
def test_half_precision_features_are_within_rounding_and_trained_weights_within_the_stated_bound(
    digits,  # noqa: F811
    exact,
    tmp_path,
    dtype,
    storage,
):
    features32, weights32 = exact
    cache = FrozenFeatureCache(storage=storage, dtype=dtype, directory=str(tmp_path))
    model, _, calls = _fit(_mlp(), digits, [FreezeSchedule([{"trainable": "top:2"}]), cache])
    stored = cache.cached["train"]
    assert stored.features.dtype == getattr(torch, dtype) and stored.nbytes * 2 == features32.numel() * 4
    assert stored.gather(0, torch.arange(3)).dtype == torch.float32  # served as the trunk produced them
    assert calls == 0
    rounding, weight_bound = BOUNDS[dtype]
    error = (stored.features.float() - features32).abs()
    big = features32.abs() > 1e-3  # below that float16's subnormals lose relative precision; bounded in abs
    assert (error[big] / features32.abs()[big]).max() <= rounding
    assert error.max() <= rounding * features32.abs().max()
    start = _mlp().state_dict()
    trained = [n for n in weights32 if not torch.equal(weights32[n], start[n])]  # hidden4 and head

    def flat(state: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([state[n].flatten() for n in trained])

    half, full, init = flat(model.state_dict()), flat(weights32), flat(start)
    relative = ((half - full).norm() / (full - init).norm()).item()  # measured: 0.0049 float16, 0.0106 bfloat16
    largest = (half - full).abs().max().item()  # measured: 0.020 float16, 0.021 bfloat16 (Adam: ~2 steps of lr)
    assert 0 < relative <= weight_bound, relative  # not exact, and not far
    assert largest <= 3 * 1e-2, largest


def test_an_unknown_dtype_is_refused_listing_the_choices():
    with pytest.raises(LtrainError, match=r"cache.dtype='float8' is not one of \['float32', 'float16', 'bfloat16'\]"):
        FrozenFeatureCache(dtype="float8")
