"""Regularisation: max-norm after every step, l2 that spares biases, gradient clipping by value and by
norm from the trainer config, dropout kinds, and early stopping that tests the best epoch's weights."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from ltrain.callbacks import MaxNorm
from ltrain.callbacks.max_norm import incoming_weight_norms
from ltrain.errors import LtrainError
from ltrain.models import build_mlp
from ltrain.modules.classifier import ClassifierModule
from ltrain.train import train
from tests.conftest import compose_config
from tests.tiny_runs import EpochSnapshots, GradientProbe, NormProbe, tiny_module, tiny_trainer, weights

R = 0.5


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, stride=2),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_max_norm_keeps_every_incoming_weight_norm_within_r_after_every_step(arch, digits_datamodule, tmp_path):
    torch.manual_seed(0)
    model = build_mlp(784, 10, hidden=[32, 32], activation="relu") if arch == "mlp" else small_cnn()
    module = ClassifierModule(model, 10, optimizer=lambda p: torch.optim.SGD(p, lr=0.5))  # big steps push norms out
    probe = NormProbe()
    tiny_trainer(tmp_path, MaxNorm(max_norm=R), probe, max_epochs=1, limit_train_batches=8).fit(
        module, datamodule=digits_datamodule
    )
    assert len(probe.max_norms) == 8
    assert max(probe.max_norms) <= R + 1e-6
    assert min(probe.max_norms) > R - 1e-3  # the constraint was active, not trivially met


def test_conv_max_norm_runs_over_in_channels_and_the_kernel():
    from ltrain.callbacks.max_norm import apply_max_norm

    conv = nn.Conv2d(3, 4, kernel_size=3)
    with torch.no_grad():
        conv.weight.fill_(1.0)  # each output channel: 27 ones, norm sqrt(27)
        conv.weight[0] *= 0.01  # channel 0: norm 0.052, inside the ball
    apply_max_norm(conv, max_norm=2.0)
    norms = incoming_weight_norms(conv)
    assert norms.tolist() == pytest.approx([0.01 * 27**0.5, 2.0, 2.0, 2.0], rel=1e-5)
    assert torch.allclose(conv.weight[1], torch.full((3, 3, 3), 2.0 / 27**0.5))  # rescaled, not clipped


def test_max_norm_rejects_a_non_positive_radius():
    with pytest.raises(LtrainError, match="max_norm > 0"):
        MaxNorm(max_norm=0)


def test_l2_penalty_changes_weight_gradients_but_leaves_bias_gradients_unchanged(digits_datamodule):
    x, y = next(iter(digits_datamodule.train_dataloader()))
    grads = {}
    for l2 in (0.0, 0.1):
        module, _ = tiny_module(digits_datamodule, f"l2={l2}")
        module.training_step((x, y), 0).backward()
        grads[l2] = {n: p.grad.clone() for n, p in module.model.named_parameters()}
    with_l2, without = grads[0.1], grads[0.0]
    biases = [n for n in without if n.endswith("bias")]
    assert biases and all(torch.equal(with_l2[n], without[n]) for n in biases)
    w = dict(tiny_module(digits_datamodule, "l2=0.1")[0].model.named_parameters())["hidden0.linear.weight"]
    torch.testing.assert_close(
        with_l2["hidden0.linear.weight"] - without["hidden0.linear.weight"], 2 * 0.1 * w.detach()
    )


@pytest.mark.parametrize("algorithm", ["value", "norm"])
def test_gradient_clipping_from_the_trainer_config(algorithm, digits_datamodule, tmp_path):
    cfg = compose_config(f"trainer.gradient_clip_algorithm={algorithm}", "trainer.gradient_clip_val=0.05")
    module, _ = tiny_module(digits_datamodule)
    probe = GradientProbe()
    trainer = instantiate(
        cfg.trainer,
        callbacks=[probe],
        logger=False,
        enable_checkpointing=False,
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=0,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(module, datamodule=digits_datamodule)
    assert len(probe.after) == 3
    for before, after in zip(probe.before, probe.after, strict=True):
        if algorithm == "value":  # each coordinate clamped: may turn the gradient
            for b, a in zip(before, after, strict=True):
                torch.testing.assert_close(a, b.clamp(-0.05, 0.05))
            assert max(b.abs().max() for b in before) > 0.05  # clipping happened
        else:  # the whole vector scaled down to norm 0.05: same direction
            norm = torch.cat([b.flatten() for b in before]).norm()
            assert norm > 0.05
            for b, a in zip(before, after, strict=True):
                torch.testing.assert_close(a, b * 0.05 / norm, rtol=1e-4, atol=1e-7)


def test_alpha_dropout_keeps_selu_statistics_and_standard_dropout_zeroes_a_fraction():
    torch.manual_seed(0)
    alpha = build_mlp(100, 2, hidden=[100], activation="selu", dropout=0.2, dropout_kind="alpha").hidden0.dropout
    standard = build_mlp(100, 2, hidden=[100], dropout=0.2).hidden0.dropout
    assert isinstance(alpha, nn.AlphaDropout) and isinstance(standard, nn.Dropout)
    x = torch.randn(200_000)
    y = alpha.train()(x)
    assert abs(y.mean().item()) < 0.01 and abs(y.std().item() - 1) < 0.01
    assert (standard.train()(x) == 0).float().mean().item() == pytest.approx(0.2, abs=0.005)


def test_early_stopping_run_tests_the_best_epochs_weights(tmp_path):
    cfg = compose_config(
        "trainer.max_epochs=30",
        "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "optimizer=sgd",
        "optimizer.lr=0.3",
        "model.hidden=[32]",
        "callbacks.early_stopping.patience=2",
        "callbacks.early_stopping.monitor=val/acc",
        "callbacks.early_stopping.mode=max",
        "+callbacks.snapshots._target_=tests.tiny_runs.EpochSnapshots",
        "plots=false",
    )
    run = train(cfg, tmp_path)
    snaps = next(c for c in run.trainer.callbacks if isinstance(c, EpochSnapshots)).snapshots
    best_epoch, best_acc, best_weights = max(snaps, key=lambda s: s[1])
    assert run.results["epochs"] < 30  # early stopping ended the run
    assert best_epoch != snaps[-1][0]  # the run went on past its best epoch ...
    assert run.results["best_val_acc"] == pytest.approx(best_acc)
    tested = weights(run.module.model)  # ... and test() restored the best one
    assert all(torch.equal(tested[k], best_weights[k]) for k in best_weights)
    assert not all(torch.equal(tested[k], snaps[-1][2][k]) for k in best_weights)
