"""The samplers and per-example randomness of ltrain's data (and the feature cache's DDP shard sampler).

Orders and augmentations must depend only on (seed, epoch, example), so a resumed run replays the
uninterrupted one exactly; DDP shards must be disjoint and cover the data; pairs must be half same-class.
Small slices of the embedded digits, plain DataLoaders, no Trainer.
"""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.trainer.connectors.data_connector import _get_distributed_sampler
from torch.utils.data import DataLoader

from ltrain.callbacks.cache_data import ShardShuffleSampler
from ltrain.data.base import EpochShuffleSampler, ImageTransform, TensorImageDataset
from ltrain.data.embedded import load_mnist_embedded
from ltrain.data.pairs import DIFFERENT, SAME, PairSampler, sample_pairs
from ltrain.errors import LtrainError

N = 36


def digits(n: int = N, augment: str = "flip_crop", seed: int = 5) -> TensorImageDataset:
    images, labels = load_mnist_embedded()
    return TensorImageDataset(images[:n], labels[:n], ImageTransform((0.13,), (0.31,), augment=augment), seed=seed)


def epoch_batches(dataset: TensorImageDataset, sampler, epoch: int, batch_size: int = 8) -> list[torch.Tensor]:
    """What a training epoch sees, after Lightning's/EpochSeed's set_epoch calls."""
    sampler.set_epoch(epoch)
    dataset.set_epoch(epoch)
    return [x for x, _ in DataLoader(dataset, batch_size=batch_size, sampler=sampler)]


# --- EpochShuffleSampler and per-example augmentation -----------------------------------------------


def test_epoch_order_is_a_permutation_that_depends_only_on_seed_and_epoch():
    a = EpochShuffleSampler(N, seed=3)
    orders = {}
    for epoch in range(4):
        a.set_epoch(epoch)
        orders[epoch] = list(a)
        assert sorted(orders[epoch]) == list(range(N))
    assert len({tuple(o) for o in orders.values()}) == 4  # every epoch its own order

    torch.manual_seed(123)
    torch.rand(1000)  # whatever else drew from the global generator
    b = EpochShuffleSampler(N, seed=3)
    for epoch in (2, 0, 3, 1):  # any visiting order
        b.set_epoch(epoch)
        assert list(b) == orders[epoch]
    other = EpochShuffleSampler(N, seed=4)
    other.set_epoch(0)
    assert list(other) != orders[0]
    assert len(a) == N


def test_an_examples_augmentation_depends_only_on_seed_epoch_and_index():
    ds = digits()
    ds.set_epoch(2)
    forward = [ds[i][0] for i in range(N)]
    torch.rand(100)
    backward = {i: ds[i][0] for i in reversed(range(N))}
    assert all(torch.equal(forward[i], backward[i]) for i in range(N))
    ds.set_epoch(3)
    changed = sum(not torch.equal(forward[i], ds[i][0]) for i in range(N))
    assert changed >= N // 2  # another epoch, other flips and crops for most examples
    other_seed = digits(seed=6)
    other_seed.set_epoch(2)
    assert sum(not torch.equal(forward[i], other_seed[i][0]) for i in range(N)) >= N // 2


def test_a_deterministic_transform_ignores_the_epoch():
    ds = digits(augment="none")
    first = [ds[i][0] for i in range(N)]
    ds.set_epoch(7)
    assert all(torch.equal(first[i], ds[i][0]) for i in range(N))


def test_a_run_resumed_mid_epoch_replays_the_rest_of_the_epoch_exactly():
    ds, sampler = digits(), EpochShuffleSampler(N, seed=11)
    uninterrupted = [epoch_batches(ds, sampler, e) for e in range(3)]
    assert not torch.equal(uninterrupted[1][0], uninterrupted[2][0])

    # a new process: fresh objects, another global RNG history, told the epoch it resumes in
    torch.manual_seed(999)
    torch.randn(50)
    ds2, sampler2 = digits(), EpochShuffleSampler(N, seed=11)
    resumed = epoch_batches(ds2, sampler2, 1)
    done = 2  # batches of epoch 1 the killed run had already trained on
    assert len(resumed) == len(uninterrupted[1]) == 5
    for got, want in zip(resumed[done:], uninterrupted[1][done:], strict=True):
        assert torch.equal(got, want)
    assert all(torch.equal(g, w) for g, w in zip(epoch_batches(ds2, sampler2, 2), uninterrupted[2], strict=True))


# --- DDP: Lightning's injected DistributedSampler and the cache's fixed shards ----------------------


def lightning_shards(dataset, world: int, epoch: int, seed: int = 0) -> list[list[int]]:
    """The shard each rank gets from the sampler Lightning injects into ltrain's DDP train loader."""
    loader = DataLoader(dataset, batch_size=4, shuffle=True)  # ltrain's train_dataloader under DDP
    out = []
    for rank in range(world):
        sampler = _get_distributed_sampler(loader, shuffle=True, overfit_batches=0, num_replicas=world, rank=rank)
        sampler.seed = seed
        sampler.set_epoch(epoch)
        out.append(list(sampler))
    return out


@pytest.mark.parametrize("world", [2, 3, 4])
def test_ddp_rank_shards_are_disjoint_and_cover_the_data_each_epoch(world):
    ds = digits()  # 36 examples: divisible by 2, 3 and 4
    epochs = [lightning_shards(ds, world, e) for e in range(2)]
    for shards in epochs:
        assert sorted(i for s in shards for i in s) == list(range(N))
        assert all(len(s) == N // world for s in shards)
    assert epochs[0] != epochs[1]  # reshuffled across ranks every epoch


def test_ddp_with_an_uneven_split_repeats_only_the_padding():
    ds = digits(n=10)
    shards = lightning_shards(ds, 3, 0)
    flat = [i for s in shards for i in s]
    assert [len(s) for s in shards] == [4, 4, 4]
    assert set(flat) == set(range(10))
    assert len(flat) - len(set(flat)) == 2  # ceil(10 / 3) * 3 - 10 examples seen twice


def test_an_example_gets_the_same_augmentation_on_whichever_rank_draws_it():
    single = digits()
    single.set_epoch(1)
    want = {i: single[i][0] for i in range(N)}
    for rank, shard in enumerate(lightning_shards(digits(), 3, 1)):
        ds = digits()  # each rank its own copy of the dataset
        ds.set_epoch(1)
        for i in shard:
            assert torch.equal(ds[i][0], want[i]), (rank, i)


@pytest.mark.parametrize("world", [2, 3])
def test_cache_shards_are_fixed_per_rank_disjoint_covering_and_reshuffled_each_epoch(world):
    ds = digits(augment="none")
    samplers = [ShardShuffleSampler(ds, world, rank, seed=2**63 + 17) for rank in range(world)]  # a 64-bit seed
    shards = [sorted(s.shard) for s in samplers]
    assert sorted(i for s in shards for i in s) == list(range(N))
    for sampler, shard in zip(samplers, shards, strict=True):
        orders = []
        for epoch in range(3):
            sampler.set_epoch(epoch)
            orders.append(list(sampler))
            assert sorted(orders[-1]) == shard  # the same examples every epoch: only those are cached
        assert len({tuple(o) for o in orders}) == 3
        again = ShardShuffleSampler(ds, world, samplers.index(sampler), seed=2**63 + 17)
        again.set_epoch(2)
        assert list(again) == orders[2]
    fixed = ShardShuffleSampler(ds, world, 0, seed=0, shuffle=False)
    fixed.set_epoch(5)
    assert list(fixed) == fixed.shard


# --- pairs --------------------------------------------------------------------------------------------


def test_pairs_are_exactly_half_same_class_with_correct_targets_and_no_self_pairs():
    labels = load_mnist_embedded()[1][::25]  # 200 digits, 20 per class (the file is sorted by class)
    for num in (1000, 1001):
        first, second, target = sample_pairs(labels, num, torch.Generator().manual_seed(0))
        same = labels[first] == labels[second]
        assert int((target == SAME).sum()) == num // 2
        assert int((target == DIFFERENT).sum()) == num - num // 2
        assert torch.equal(same, target == SAME)
        assert not bool((first == second).any())
        assert not torch.equal(target[: num // 2], torch.full((num // 2,), SAME))  # shuffled, not blocked


def test_a_same_class_partner_is_uniform_over_the_other_images_of_its_class():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2])  # class 0: four images, so three partners each
    first, second, target = sample_pairs(labels, 40_000, torch.Generator().manual_seed(1))
    same = target == SAME
    for i in range(4):
        partners = second[same & (first == i)]
        counts = torch.bincount(partners, minlength=9).float()
        assert counts[i] == 0 and counts[4:].sum() == 0
        share = counts[[j for j in range(4) if j != i]] / counts.sum()
        assert torch.allclose(share, torch.full((3,), 1 / 3), atol=0.04)
    diff = ~same & (first == 4)  # class 1: a partner among the 7 images of classes 0 and 2
    counts = torch.bincount(second[diff], minlength=9).float()
    assert counts[4:6].sum() == 0
    share = counts[[0, 1, 2, 3, 6, 7, 8]] / counts.sum()
    assert torch.allclose(share, torch.full((7,), 1 / 7), atol=0.03)


def test_the_pair_sampler_draws_per_epoch_and_a_fixed_one_never_changes():
    labels = load_mnist_embedded()[1][::50]  # 100 digits, 10 per class
    s = PairSampler(labels, 64, seed=3)
    s.set_epoch(0)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    assert len(e0) == len(s) == 64 and e0 != e1
    again = PairSampler(labels, 64, seed=3)
    again.set_epoch(1)
    assert list(again) == e1  # resumable: the epoch's pairs from (seed, epoch) alone
    assert sum(t == SAME for _, _, t in e1) == 32
    fixed = PairSampler(labels, 64, seed=3, fixed=True)
    fixed.set_epoch(9)
    assert list(fixed) == e0


def test_pairs_need_two_classes_with_two_images_each():
    with pytest.raises(LtrainError, match="at least 2 classes"):
        sample_pairs(torch.tensor([0, 0, 0]), 10, torch.Generator())
    with pytest.raises(LtrainError, match=r"class sizes \[3, 1\]"):
        sample_pairs(torch.tensor([0, 0, 0, 1]), 10, torch.Generator())
    with pytest.raises(LtrainError, match="must be positive"):
        sample_pairs(torch.tensor([0, 0, 1, 1]), 0, torch.Generator())
