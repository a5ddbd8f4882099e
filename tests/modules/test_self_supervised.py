"""Autoencoders (dense, conv, greedy layer-wise), SimCLR's NT-Xent and views, good-vs-corrupted discrimination."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from ltrain.models import build_mlp
from ltrain.modules.autoencoder import DenoisingAutoencoder, conv_autoencoder, dense_decoder, fit_greedy_layerwise
from ltrain.modules.contrastive import ContrastiveAugment, SimCLRModule, nt_xent
from ltrain.modules.corruption import CorruptionDiscriminationModule, corrupt_images
from ltrain.modules.encoders import encoder_of
from tests.tiny_runs import quiet_trainer

ADAM = functools.partial(torch.optim.Adam, lr=1e-3)


@pytest.fixture(scope="module")
def loaders(pretext_digits):
    """The 1,000 labelled digits (standardised) for training, the 500 val digits for validation."""

    def tensors(split):
        ds = pretext_digits.splits[split]
        return TensorDataset(torch.stack([ds[i][0] for i in range(len(ds))]), ds.labels)

    train, val = tensors("train"), tensors("val")
    return (lambda: DataLoader(train, batch_size=100, shuffle=True)), (lambda: DataLoader(val, batch_size=500))


def fit_and_compare(module, loaders, **trainer_kwargs) -> tuple[float, float]:
    train, val = loaders
    trainer = quiet_trainer(**trainer_kwargs)
    (before,) = trainer.validate(module, val(), verbose=False)
    trainer.fit(module, train(), val())
    (after,) = trainer.validate(module, val(), verbose=False)
    return before["val/loss"], after["val/loss"]


def test_dense_denoising_autoencoder_lowers_its_reconstruction_loss(loaders):
    torch.manual_seed(0)
    network = build_mlp(784, 10, hidden=[64, 32])
    encoder, dim = encoder_of(network)
    module = DenoisingAutoencoder(
        encoder, dense_decoder(dim, [64], (1, 28, 28)), ADAM, noise="gaussian", noise_level=0.3
    )
    before, after = fit_and_compare(module, loaders, max_epochs=3)
    assert after < 0.7 * before  # measured 1.6 -> 0.65 (MSE on standardised pixels)
    assert module.encoder is encoder and network.hidden1.linear.weight is encoder.hidden1.linear.weight


def test_conv_autoencoder_rebuilds_the_input_shape_and_learns(loaders):
    torch.manual_seed(0)
    encoder, decoder = conv_autoencoder(1, widths=(8, 16))
    x = torch.randn(2, 1, 28, 28)
    assert encoder(x).shape == (2, 16, 7, 7) and decoder(encoder(x)).shape == x.shape
    before, after = fit_and_compare(
        DenoisingAutoencoder(encoder, decoder, ADAM, noise="dropout", noise_level=0.2), loaders, max_epochs=2
    )
    assert after < 0.8 * before


def test_greedy_layerwise_trains_one_block_at_a_time_on_the_codes_of_the_frozen_ones_below(loaders):
    torch.manual_seed(0)
    network = build_mlp(784, 10, hidden=[32, 16])
    start = {k: v.clone() for k, v in network.state_dict().items()}
    snapshots = []

    class Snapshot(__import__("lightning").Callback):
        def on_train_end(self, trainer, module):
            snapshots.append({k: v.clone() for k, v in network.state_dict().items()})

    history = fit_greedy_layerwise(
        network, loaders[0](), lambda k: quiet_trainer(max_epochs=2, callbacks=[Snapshot()]), ADAM
    )
    assert len(history) == 2 and all(h["train/loss"] < 2.0 for h in history)
    stage0, stage1 = snapshots
    assert not torch.equal(stage0["hidden0.linear.weight"], start["hidden0.linear.weight"])
    assert torch.equal(stage0["hidden1.linear.weight"], start["hidden1.linear.weight"])  # not trained yet in stage 0
    assert torch.equal(stage1["hidden0.linear.weight"], stage0["hidden0.linear.weight"])  # frozen in stage 1
    assert not torch.equal(stage1["hidden1.linear.weight"], stage0["hidden1.linear.weight"])
    assert torch.equal(network.head.weight, start["head.weight"])  # the head is left for fine-tuning
    assert all(p.requires_grad for p in network.parameters())


def test_nt_xent_matches_its_definition():
    torch.manual_seed(0)
    z1, z2 = torch.randn(4, 8), torch.randn(4, 8)
    t = 0.5
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    total = 0.0
    for i in range(8):
        j = (i + 4) % 8
        others = [k for k in range(8) if k != i]
        total += -math.log(math.exp(z[i] @ z[j] / t) / sum(math.exp(z[i] @ z[k] / t) for k in others))
    assert nt_xent(z1, z2, t).item() == pytest.approx(total / 8, rel=1e-5)
    aligned = nt_xent(z1, z1.clone(), 0.1)
    assert aligned < nt_xent(z1, z2, 0.1)  # identical views score better than unrelated ones


def test_contrastive_views_differ_per_image_and_repeat_with_a_seeded_generator():
    x = torch.randn(6, 1, 28, 28)
    aug = ContrastiveAugment(flip=True)
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    c = aug(x, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    identity = ContrastiveAugment(crop_scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False, jitter=0.0, noise=0.0)
    torch.testing.assert_close(identity(x), x, atol=1e-4, rtol=0)  # a full crop with no jitter is the image


def test_simclr_on_digits_lowers_its_contrastive_loss(loaders):
    torch.manual_seed(0)
    encoder, dim = encoder_of(build_mlp(784, 10, hidden=[128, 64]))
    module = SimCLRModule(encoder, dim, ADAM, temperature=0.5, augment=ContrastiveAugment(flip=False))
    before, after = fit_and_compare(module, loaders, max_epochs=3)
    assert after < before - 0.3  # val batch of 500: ln(999) = 6.9 is chance


def test_simclr_trains_a_timm_cnn_trunk(pretext_digits):
    import timm

    torch.manual_seed(0)
    net = timm.create_model("resnet10t", num_classes=10, in_chans=1)
    encoder, dim = encoder_of(net)
    module = SimCLRModule(encoder, dim, ADAM, augment=ContrastiveAugment(flip=False))
    x = torch.stack([pretext_digits.splits["train"][i][0] for i in range(32)])
    x = F.interpolate(x, size=32, mode="bilinear", align_corners=False)
    start = net.conv1[0].weight.clone()
    quiet_trainer(max_epochs=1).fit(module, DataLoader(TensorDataset(x, torch.zeros(32)), batch_size=16))
    assert not torch.equal(start, net.conv1[0].weight)  # the trunk's stem was trained
    assert module.projection[-1].out_features == 64 and net.get_classifier().out_features == 10


def test_corruptions_damage_exactly_the_square_they_claim():
    x = torch.randn(4, 1, 10, 10)
    erased = corrupt_images(x, "erase", 0.5, torch.Generator().manual_seed(0))
    assert ((erased == 0) & (x != 0)).sum(dim=(1, 2, 3)).tolist() == [25] * 4
    pasted = corrupt_images(x, "paste", 0.5, torch.Generator().manual_seed(0))
    changed = (pasted != x).flatten(1)
    assert (changed.sum(1) == 25).all() and torch.equal(changed, ((erased == 0) & (x != 0)).flatten(1))


def test_good_vs_corrupted_discrimination_learns_above_chance(loaders):
    torch.manual_seed(0)
    encoder, dim = encoder_of(build_mlp(784, 10, hidden=[64]))
    module = CorruptionDiscriminationModule(encoder, dim, ADAM, corruption="erase", strength=0.4)
    before, after = fit_and_compare(module, loaders, max_epochs=3)
    assert after < before - 0.05  # measured 0.716 -> 0.628 (ln 2 = 0.693 is chance)
