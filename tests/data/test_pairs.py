"""Pairs: half same, half different, label 0 = same; seeded; never an image the classifier uses."""

from __future__ import annotations

import pytest
import torch

from ltrain.data.pairs import DIFFERENT, SAME, PairData, PairSampler, UnlabelledData, sample_pairs
from ltrain.errors import LtrainError


def test_ten_thousand_pairs_are_half_same_and_every_label_follows_the_book_convention(pretext_digits):
    pairs = PairData(pretext_digits, pool="unused", pairs_per_epoch=2_000, seed=3)
    pairs.setup()
    labels = pairs.images["train"].labels
    sampler = pairs.train_dataloader().sampler
    firsts, seconds, targets = [], [], []
    for epoch in range(5):  # 5 epochs x 2,000 = 10,000 draws
        sampler.set_epoch(epoch)
        a, b, t = zip(*sampler, strict=True)
        firsts += a
        seconds += b
        targets += t
    a, b, t = torch.tensor(firsts), torch.tensor(seconds), torch.tensor(targets)
    assert len(t) == 10_000
    assert abs((t == SAME).float().mean().item() - 0.5) <= 0.02
    same_class = labels[a] == labels[b]
    assert torch.equal(t == SAME, same_class) and torch.equal(t == DIFFERENT, ~same_class)
    assert (a != b).all()  # an image is never paired with itself
    assert SAME == 0 and DIFFERENT == 1


def test_a_batch_holds_both_images_and_a_float_target_matching_their_classes(pretext_digits):
    pairs = PairData(pretext_digits, pairs_per_epoch=256, batch_size=64, seed=0)
    x_a, x_b, target = next(iter(pairs.train_dataloader()))
    assert x_a.shape == x_b.shape == (64, 1, 28, 28) and target.dtype == torch.float32
    assert set(target.unique().tolist()) == {0.0, 1.0}


def test_the_pair_stream_repeats_for_a_seed_and_epoch_and_changes_with_either():
    labels = torch.arange(10).repeat_interleave(30)
    draw = lambda seed, epoch: (s := PairSampler(labels, 500, seed), s.set_epoch(epoch), list(s))[2]  # noqa: E731
    assert draw(1, 0) == draw(1, 0)
    assert draw(1, 0) != draw(1, 1)
    assert draw(1, 0) != draw(2, 0)
    fixed = PairSampler(labels, 500, 1, fixed=True)
    first = list(fixed)
    fixed.set_epoch(7)
    assert list(fixed) == first  # validation pairs do not move


def test_unused_pool_is_disjoint_from_the_labelled_val_and_test_images(pretext_digits):
    pairs = PairData(pretext_digits, pool="unused")
    pairs.setup()
    pool = torch.cat([pairs.pool_indices["train"], pairs.pool_indices["val"]])
    used = torch.cat(list(pretext_digits.split_indices.values()))
    assert len(set(pool.tolist()) & set(used.tolist())) == 0
    assert len(pool.unique()) == len(pool) == 3_000  # 300 per digit
    assert {k: len(v) for k, v in pairs.images.items()} == {"train": 2_700, "val": 300}
    assert torch.bincount(pairs.images["train"].labels).tolist() == [270] * 10
    # the images are the digits at those indices, standardised like the classifier's inputs
    assert pairs.images["train"].transform == pretext_digits.splits["val"].transform


def test_pool_all_adds_the_labelled_train_images_but_never_val_or_test(pretext_digits):
    data = UnlabelledData(pretext_digits, pool="all", val_fraction=0.1)
    data.setup()
    pool = set(torch.cat(list(data.pool_indices.values())).tolist())
    assert set(pretext_digits.split_indices["train"].tolist()) <= pool
    assert not pool & set(pretext_digits.split_indices["val"].tolist()) and not pool & set(
        pretext_digits.split_indices["test"].tolist()
    )
    assert len(pool) == 4_000
    x, _ = next(iter(data.train_dataloader()))
    assert x.shape == (256, 1, 28, 28)


def test_pairs_need_two_classes_with_two_images_each():
    with pytest.raises(LtrainError, match="at least 2 classes"):
        sample_pairs(torch.zeros(10, dtype=torch.long), 4, torch.Generator())
    with pytest.raises(LtrainError, match="not one of"):
        PairData(None, pool="everything")  # type: ignore[arg-type]


def test_without_a_train_cap_nothing_is_left_for_unused_pairs_and_the_error_says_what_to_do(digit_arrays):
    from tests.loaded_digits import LoadedDigits

    with pytest.raises(LtrainError, match="train_per_class"):
        PairData(LoadedDigits(digit_arrays), pool="unused").setup()
