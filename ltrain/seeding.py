"""One way to derive random seeds: ``derive_seed(stream, seed, epoch, index, ...)``.

Every random draw ltrain makes on its own (an augmentation, an epoch's order, a dropout mask) is
seeded from a tuple of integers such as (run seed, epoch, example index). Deriving that seed with one
hash instead of a formula per call site (``seed * 1_000_003 + epoch`` and eight relatives) buys two
things:

- **No collisions.** Linear formulas collide: with ``seed * 1_000_003 + epoch``, seed 0 at epoch
  1_000_003 is seed 1 at epoch 0, and two call sites using the same formula share one stream. A hash
  of a length-prefixed encoding separates (1, 23) from (12, 3) and every tuple from every other, up
  to the 2**-63 chance of a 63-bit collision.
- **Resume-exactness is visible.** A resumed run, a DDP rank and a data-loader worker reproduce a draw
  exactly when its seed is a pure function of integers they all know (seed, epoch, index, rank, ...),
  never of how many numbers a global generator drew before. Writing every seed as ``derive_seed(...)``
  makes that property readable at the call site.

Each call site passes its own :class:`Stream` as the first part, so no two sites draw the same
numbers by accident; the list below is the one place to see them all. The values are part of
ltrain's reproducibility: changing one changes every run's random numbers.
"""

from __future__ import annotations

import operator
from enum import IntEnum, unique
from hashlib import blake2b

__all__ = ["Stream", "derive_seed"]

_PERSON = b"ltrain.seed"  # blake2b personalisation: our seeds differ from any other blake2b use


@unique
class Stream(IntEnum):
    """The random streams ltrain draws from; each call site of :func:`derive_seed` names one first."""

    AUGMENT = 1  # data.base.TensorImageDataset: (seed, epoch, index) -> one example's augmentation
    EPOCH_ORDER = 2  # data.base.EpochShuffleSampler: (seed, epoch) -> the epoch's order
    SHARD_ORDER = 3  # callbacks.cache_data.ShardShuffleSampler: (seed, epoch, rank) -> a shard's order
    PAIRS = 4  # data.pairs.PairSampler: (seed, epoch) -> the epoch's pairs
    VAL_PAIRS = 5  # data.pairs.PairDataModule: (seed,) -> the seed of the fixed validation pairs
    CLASS_CAP = 6  # data.subsets.cap_per_class: (seed,) -> which examples of a class are kept
    TRAIN_BATCH = 7  # callbacks.epoch_seed.EpochSeed: (seed, epoch, batch) -> global RNGs before a batch
    MC_BATCH = 8  # inference.evaluation.MCSettings.batch_seed: (seed, global batch) -> a batch's MC seed
    MC_MASK = 9  # inference.sites: (batch seed, site, sample) -> one dropout mask
    MIXUP = 10  # modules.mixup.batch_seed: (seed, epoch, batch, rank) -> one batch's Mixup/CutMix draws


def derive_seed(*parts: int, bits: int = 63) -> int:
    """A well-mixed seed in ``[0, 2**bits)`` that depends only on the integers ``parts``.

    The parts (any size, negative allowed; anything with ``__index__``) are encoded as length-prefixed
    little-endian two's-complement bytes and hashed with BLAKE2b (8-byte digest); the top ``bits`` bits
    are returned. The result is the same on every platform, Python version and process. It takes about
    1.5 µs, cheap enough to call once per example per epoch in a data loader.

    Args:
        parts: the integers the draw depends on, a :class:`Stream` first, e.g.
            ``derive_seed(Stream.AUGMENT, seed, epoch, index)``.
        bits: the width of the result: 63 (the default) fits ``torch.Generator.manual_seed``; 32 fits
            ``seed_everything`` and NumPy's legacy seeding.

    Example::

        gen = torch.Generator().manual_seed(derive_seed(Stream.EPOCH_ORDER, seed, epoch))
    """
    if not 1 <= bits <= 64:
        raise ValueError(f"derive_seed(bits={bits}): bits must be between 1 and 64")
    h = blake2b(digest_size=8, person=_PERSON)
    for k, part in enumerate(parts):
        try:
            value = operator.index(part)
        except TypeError:
            raise TypeError(f"derive_seed part {k} is {part!r}: seeds are derived from integers only") from None
        n = (value.bit_length() + 8) >> 3  # bytes for the value and its sign bit
        h.update(n.to_bytes(4, "little"))
        h.update(value.to_bytes(n, "little", signed=True))
    return int.from_bytes(h.digest(), "little") >> (64 - bits)
