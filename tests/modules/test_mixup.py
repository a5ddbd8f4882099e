"""Mixup/CutMix: timm's own mixing and loss, drawn from (seed, epoch, batch); training batches only; exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy

from ltrain.errors import LtrainError
from ltrain.modules import BatchMixup, ClassifierModule
from ltrain.modules.mixup import batch_seed
from ltrain.train import build_datamodule, train

TIMM_ARGS = [
    {"mixup_alpha": 0.8, "cutmix_alpha": 1.0},
    {"mixup_alpha": 0.4, "cutmix_alpha": 0.0, "mode": "pair", "label_smoothing": 0.0},
    {"mixup_alpha": 1.0, "cutmix_alpha": 1.0, "mode": "elem", "switch_prob": 0.3, "prob": 0.7},
    {"mixup_alpha": 0.0, "cutmix_alpha": 0.0, "cutmix_minmax": [0.2, 0.8]},
]


def _batch(n: int = 8, classes: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 12, 12, generator=gen), torch.randint(0, classes, (n,), generator=gen)


@pytest.mark.parametrize("args", TIMM_ARGS, ids=["deit", "pair_mixup", "elem_both", "cutmix_minmax"])
def test_the_mixed_batch_is_timms_mixup_output_for_the_batch_seed(args):
    x, y = _batch()
    for epoch, batch_idx in [(0, 0), (3, 17)]:
        ours, soft = BatchMixup(**args, num_classes=5, seed=7)(x, y, epoch=epoch, batch_idx=batch_idx)
        np.random.seed(batch_seed(7, epoch, batch_idx))
        timm_x, timm_soft = Mixup(**{"label_smoothing": 0.1, **args}, num_classes=5)(x.clone(), y)
        torch.testing.assert_close(ours, timm_x, rtol=0, atol=0)
        torch.testing.assert_close(soft, timm_soft, rtol=0, atol=0)
        torch.testing.assert_close(soft.sum(1), torch.ones(len(y)))


def test_mixing_leaves_the_batch_and_numpys_global_stream_alone():
    x, y = _batch()
    x_before = x.clone()
    np.random.seed(123)
    expected = np.random.rand(3)
    np.random.seed(123)
    mixed, _ = BatchMixup(mixup_alpha=1.0, cutmix_alpha=0.0, num_classes=5)(x, y, epoch=0, batch_idx=0)
    assert np.array_equal(np.random.rand(3), expected)
    assert torch.equal(x, x_before) and not torch.equal(mixed, x)


def test_draws_depend_on_seed_epoch_batch_and_rank_only():
    x, y = _batch()
    mix = BatchMixup(mixup_alpha=1.0, cutmix_alpha=0.0, num_classes=5, seed=1)
    a = mix(x, y, epoch=2, batch_idx=4)[0]
    np.random.seed(999)  # whatever the global stream holds
    assert torch.equal(mix(x, y, epoch=2, batch_idx=4)[0], a)
    for other in [{"epoch": 3, "batch_idx": 4}, {"epoch": 2, "batch_idx": 5}, {"epoch": 2, "batch_idx": 4, "rank": 1}]:
        assert not torch.equal(mix(x, y, **other)[0], a), other


def _module(mixup: BatchMixup | None, loss: str = "cross_entropy") -> ClassifierModule:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 12 * 12, 5))
    return ClassifierModule(net, 5, optimizer=torch.optim.SGD, loss=loss, mixup=mixup)


def test_the_training_loss_is_soft_target_cross_entropy_on_the_mixed_batch_and_accuracy_uses_hard_labels():
    x, y = _batch()
    module = _module(BatchMixup(num_classes=None, seed=3))
    loss = module.training_step((x, y), 11)
    np.random.seed(batch_seed(3, 0, 11))
    mixed, soft = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=5)(x.clone(), y)
    logits = module.model(mixed)
    expected = SoftTargetCrossEntropy()(logits, soft)
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)
    torch.testing.assert_close(loss, F.cross_entropy(logits, soft))  # torch's soft-target cross-entropy agrees
    assert loss.item() != pytest.approx(F.cross_entropy(module.model(x), y).item(), abs=1e-3)
    assert module.train_acc.compute().item() == pytest.approx((logits.argmax(1) == y).float().mean().item())


def test_validation_and_test_batches_are_not_mixed():
    x, y = _batch()
    module = _module(BatchMixup(num_classes=5))
    loss = module._step((x, y), "val", module.val_acc, batch_idx=3)
    torch.testing.assert_close(loss, F.cross_entropy(module.model(x), y), rtol=0, atol=0)


def test_refusals_name_the_key():
    x, y = _batch()
    with pytest.raises(LtrainError, match=r"needs an even batch, got 7: use an even data\.batch_size"):
        BatchMixup(num_classes=5)(x[:7], y[:7], epoch=0, batch_idx=0)
    with pytest.raises(LtrainError, match="CutMix needs"):
        BatchMixup(num_classes=5)(x.flatten(1), y, epoch=0, batch_idx=0)
    with pytest.raises(LtrainError, match=r"set mixup\.cutmix_alpha=0"):
        BatchMixup().bind(10, (784,))
    BatchMixup(cutmix_alpha=0.0).bind(10, (784,))(x.flatten(1), y, epoch=0, batch_idx=0)  # mixup only: flat is fine
    with pytest.raises(LtrainError, match=r"class indices in \[0, 3\)"):
        BatchMixup(num_classes=3)(x, y, epoch=0, batch_idx=0)
    with pytest.raises(LtrainError, match=r"mixup\.num_classes=4 but the data has 5"):
        _module(BatchMixup(num_classes=4))
    with pytest.raises(LtrainError, match="loss='mse' does not take"):
        _module(BatchMixup(), loss="mse")
    with pytest.raises(LtrainError, match=r"mixup.cutmix_minmax=\[0.8, 0.2\] is not valid"):
        BatchMixup(cutmix_minmax=[0.8, 0.2])


def test_with_mixup_the_last_odd_training_batch_is_dropped(cfg_factory):
    from ltrain.train import build_mixup

    cfg = cfg_factory("mixup=default", "data.batch_size=64")
    dm = build_datamodule(cfg)
    assert len(dm.train_dataloader()) == len(dm.splits["train"]) // 64 + 1  # 3,500 = 54 x 64 + 44
    build_mixup(cfg, dm)
    assert len(dm.train_dataloader()) == len(dm.splits["train"]) // 64
    assert len(dm.val_dataloader().dataset) == len(dm.splits["val"])  # evaluation keeps every example


SMALL = ["model.hidden=[64,64]", "trainer.limit_train_batches=15", "callbacks=none", "callbacks.epoch_seed=null"]


def test_a_short_run_with_mixup_trains_and_resumes_to_the_uninterrupted_weights(cfg_factory, tmp_path):
    # No EpochSeed and no dropout: the batch order comes from (seed, epoch) and the mixing from (seed, epoch, batch),
    # so equality below is the mixing's own exactness, not a global reseed's.
    mix = [*SMALL, "mixup=default", "test=false"]
    full = train(cfg_factory(*mix, "trainer.max_epochs=3", "test=true"), tmp_path / "full")
    train(cfg_factory(*mix, "trainer.max_epochs=2"), tmp_path / "part")
    last = tmp_path / "part" / "checkpoints" / "last.ckpt"
    resumed = train(cfg_factory(*mix, "trainer.max_epochs=3", f"resume={last}"), tmp_path / "resumed")
    assert full.results["global_step"] == resumed.results["global_step"] == 45
    a, b = full.module.state_dict(), resumed.module.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert np.isfinite(full.results["test_loss"]) and full.results["test_acc"] > 0.6, full.results


def test_a_feature_cache_under_a_module_that_mixes_its_inputs_is_refused_before_the_first_step(cfg_factory, tmp_path):
    from ltrain.callbacks import FreezeSchedule, FrozenFeatureCache
    from tests.tiny_runs import tiny_trainer

    cfg = cfg_factory("model.hidden=[16,16]", "mixup=default", "data.train_per_class=20", "data.batch_size=16")
    dm = build_datamodule(cfg)
    from ltrain.train import build_module

    module = build_module(cfg, dm)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    trainer = tiny_trainer(tmp_path, FreezeSchedule([{"trainable": "head"}]), FrozenFeatureCache())
    with pytest.raises(LtrainError, match=r"mixes its training inputs .* cannot be mixed exactly"):
        trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 0
    assert all(torch.equal(v, module.state_dict()[k]) for k, v in before.items())
