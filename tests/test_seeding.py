"""derive_seed: pinned values, range, separation of ambiguous tuples, no collisions on a grid."""

from __future__ import annotations

import subprocess
import sys
import timeit

import numpy as np
import pytest
import torch

from ltrain.seeding import Stream, derive_seed


def test_values_are_pinned():
    # A change here changes every run's random numbers (augmentations, orders, masks): on purpose only.
    assert derive_seed(0) == 4885371089597666919
    assert derive_seed(Stream.AUGMENT, 0, 0, 0) == 9061989943547618955
    assert derive_seed(Stream.TRAIN_BATCH, 42, 3, 7, bits=32) == 1520945127
    assert derive_seed(-1, 2**100) == 8344966211251866232


def test_the_same_in_a_fresh_process():
    # A fresh interpreter has another hash randomisation (PYTHONHASHSEED): the seed must not depend on it.
    code = "from ltrain.seeding import derive_seed; print(derive_seed(7, -3, 2**70))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert int(out) == derive_seed(7, -3, 2**70)


def test_ambiguous_tuples_get_distinct_seeds():
    tuples = [(), (0,), (0, 0), (1, 23), (12, 3), (123,), (1, 2, 3), (3, 2, 1), (2, 1, 3), (-1,), (255,), (256,)]
    tuples += [(1, 0), (0, 1), (2**64,), (-(2**64),), (2**64 - 1,), (0, 2**64)]
    seeds = [derive_seed(*t) for t in tuples]
    assert len(set(seeds)) == len(tuples)


def test_the_old_formula_collision_is_gone():
    # seed * 1_000_003 + epoch made (seed 0, epoch 1_000_003) the same stream as (seed 1, epoch 0).
    assert derive_seed(Stream.EPOCH_ORDER, 0, 1_000_003) != derive_seed(Stream.EPOCH_ORDER, 1, 0)


def test_streams_separate_call_sites():
    seeds = {derive_seed(s, 0, 0, 0) for s in Stream}
    assert len(seeds) == len(Stream)


@pytest.mark.parametrize("bits", [1, 8, 32, 63, 64])
def test_range_respected(bits):
    seeds = [derive_seed(i, -i, 2**90 + i, bits=bits) for i in range(2000)]
    assert min(seeds) >= 0 and max(seeds) < 2**bits
    if bits >= 32:  # the top bit is used: the values fill the range
        assert max(seeds) >= 2 ** (bits - 1)


def test_accepts_anything_integral_and_refuses_floats():
    expected = derive_seed(1, 2, 3)
    assert derive_seed(np.int64(1), torch.tensor(2), np.int32(3)) == expected
    with pytest.raises(TypeError, match=r"part 1 is 2\.0: seeds are derived from integers only"):
        derive_seed(1, 2.0)
    with pytest.raises(ValueError, match="bits must be between 1 and 64"):
        derive_seed(1, bits=65)


def test_fits_torch_and_seed_everything():
    torch.Generator().manual_seed(derive_seed(2**200, -5))  # 63 bits: any generator seed
    np.random.seed(derive_seed(2**200, -5, bits=32))  # 32 bits: NumPy's legacy seeding (seed_everything)


def test_no_collisions_on_a_100k_grid():
    seeds = {derive_seed(Stream.AUGMENT, s, e, i) for s in range(10) for e in range(100) for i in range(100)}
    assert len(seeds) == 100_000
    seeds32 = [
        derive_seed(Stream.TRAIN_BATCH, s, e, i, bits=32) for s in range(10) for e in range(100) for i in range(100)
    ]
    # 32 bits: the birthday bound expects about 1.16 collisions among 100k; far more means poor mixing.
    assert 100_000 - len(set(seeds32)) <= 8


def test_fast_enough_for_a_data_loader():
    per_call = min(timeit.repeat(lambda: derive_seed(1, 12345, 7, 4567), number=2000, repeat=5)) / 2000
    assert per_call < 20e-6  # about 1.5 µs on one core; a generous bound for a loaded CI machine
