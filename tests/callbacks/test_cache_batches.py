"""How FrozenFeatureCache hands out batches from memory: one copy, no worker processes, the same batches.

bench/cache.py case (c) (resnet50 at 224 px) found a cached epoch 9x its floor: every epoch started the
loader's worker processes, advanced indexing copied each batch slowly and default_collate stacked a second
copy. These tests hold the faster path to the batches and weights of the plain one.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, default_collate

from ltrain.callbacks import FrozenFeatureCache
from ltrain.callbacks.cache import _CollateFeatures
from ltrain.callbacks.cache_data import CachedFeatures, FeatureBatch, SwitchableDataset
from ltrain.modules.classifier import ClassifierModule


def _cached(n: int = 20) -> CachedFeatures:
    features = torch.randn(2, n, 4, 3, generator=torch.Generator().manual_seed(0))
    return CachedFeatures(torch.arange(n), torch.arange(n) % 3, features)


def test_a_cached_batch_collates_to_exactly_what_default_collate_makes_of_its_items():
    cached = _cached()
    ds = SwitchableDataset(TensorDataset(torch.zeros(20, 1), torch.zeros(20)), cached)
    ds.set_epoch(3)  # view 1
    indices = [7, 3, 19, 0, 8]
    batch = ds.__getitems__(indices)
    assert isinstance(batch, FeatureBatch) and len(batch) == 5
    fast = _CollateFeatures(default_collate)(batch)
    plain = default_collate(list(batch))
    assert isinstance(fast, list) and len(fast) == 2
    assert torch.equal(fast[0], plain[0]) and torch.equal(fast[1], plain[1])
    assert torch.equal(fast[0], cached.features[1, indices]) and fast[1].tolist() == [1, 0, 1, 0, 2]
    # a collate_fn of the user's own gets the items, as it would without the cache
    assert _CollateFeatures(lambda items: len(items))(batch) == 5


def _fit(tmp_path: Path, storage: str, workers: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=gen)
    y = x[:, :3].argmax(1)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 3))
    net[0].requires_grad_(False)
    module = ClassifierModule(net, 3, optimizer=lambda ps: torch.optim.SGD(ps, lr=0.1))
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        callbacks=[FrozenFeatureCache(storage=storage, directory=str(tmp_path / f"{storage}{workers}"))],
    )
    trainer.fit(
        module,
        DataLoader(TensorDataset(x[:160], y[:160]), batch_size=16, shuffle=True, num_workers=workers),
        DataLoader(TensorDataset(x[160:], y[160:]), batch_size=20, num_workers=workers),
    )
    return net.state_dict()


def test_a_memory_cache_trains_to_the_same_weights_with_or_without_loader_workers(tmp_path):
    """With workers the images are precomputed in worker processes; the cached epochs skip them (same draws)."""
    expected = _fit(tmp_path, "memory", 0)
    for storage, workers in (("memory", 2), ("disk", 0)):
        got = _fit(tmp_path, storage, workers)
        for name, value in expected.items():
            assert torch.equal(got[name], value), (storage, workers, name)
