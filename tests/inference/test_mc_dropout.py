"""MC dropout on real timm models and the chapter's MLP: real samples, untouched BN, fast == naive."""

from __future__ import annotations

import math

import pytest
import timm
import torch
from torch import nn

from ltrain.errors import LtrainError
from ltrain.inference import mc_dropout
from ltrain.models import build_mlp
from ltrain.modules.classifier import ClassifierModule

TIMM_HEAD_DROPOUT = ["resnet18", "efficientnet_b0"]


def timm_model(name: str, drop_rate: float = 0.5, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    if name.startswith("vit"):
        kwargs.setdefault("img_size", 32)
    return timm.create_model(name, num_classes=10, drop_rate=drop_rate, **kwargs)


def images(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_same_seed_gives_same_samples_and_another_seed_others():
    model, x = timm_model("resnet18"), images()
    a = mc_dropout(model, x, samples=8, seed=3)
    b = mc_dropout(model, x, samples=8, seed=3)
    c = mc_dropout(model, x, samples=8, seed=4)
    assert torch.equal(a.samples, b.samples)
    assert not torch.equal(a.samples, c.samples)
    torch.manual_seed(11)
    d = mc_dropout(model, x, samples=8)  # seed drawn from the global generator, recorded
    torch.manual_seed(11)
    e = mc_dropout(model, x, samples=8)
    assert d.seed == e.seed and torch.equal(d.samples, e.samples)


@pytest.mark.parametrize("name", TIMM_HEAD_DROPOUT)
def test_timm_head_dropout_samples_differ_and_bn_and_weights_are_bit_identical(name):
    model, x = timm_model(name), images()
    model.train()  # the worst case: a model left in training mode, BN would update in train mode
    before = snapshot(model)
    pred = mc_dropout(model, x, samples=10, seed=0)
    after = snapshot(model)
    assert pred.sites == ["<forward_head F.dropout>"] and pred.path == "fast"
    distinct = {tuple(s.flatten().tolist()) for s in pred.samples}
    assert len(distinct) == 10, "every MC sample must differ"
    assert float(pred.std.max()) > 0
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before), "weights or BN statistics moved"
    assert any("running_mean" in k for k in before)
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    mc_dropout(model, x, samples=3, seed=0)
    assert not any(m.training for m in model.modules())


def test_mixed_modes_are_restored_even_when_the_forward_fails():
    model = timm_model("resnet18")
    model.train()
    model.layer2.eval()
    modes = {n: m.training for n, m in model.named_modules()}
    with pytest.raises(RuntimeError):
        mc_dropout(model, torch.randn(2, 5, 32, 32), samples=4, seed=0)  # 5 channels: the stem fails
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules()), "hooks left behind"


def mlp(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    kwargs.setdefault("dropout", 0.3)
    return build_mlp(3 * 32 * 32, 10, hidden=(64, 64, 64), **kwargs)


FAST_VS_NAIVE = {
    "resnet18": lambda: timm_model("resnet18"),
    "efficientnet_b0": lambda: timm_model("efficientnet_b0"),
    "vit_head_drop_module": lambda: timm_model("vit_tiny_patch16_224", depth=2),
    "mlp_dropout": lambda: mlp(),
    "mlp_alpha_dropout_selu": lambda: mlp(activation="selu", init="lecun_normal", dropout_kind="alpha"),
    "mlp_batchnorm_top2_dropout": lambda: mlp(batch_norm="before", dropout_layers=2),
}


FAST_VS_NAIVE_CASES = [(case, None) for case in FAST_VS_NAIVE] + [
    ("resnet18", 4),
    ("mlp_dropout", 1),
    ("mlp_dropout", 4),
]


@pytest.mark.parametrize("case, chunk_size", FAST_VS_NAIVE_CASES)
def test_fast_path_equals_naive_loop_with_the_same_masks(case, chunk_size):
    model, x = FAST_VS_NAIVE[case](), images(3)
    fast = mc_dropout(model, x, samples=6, seed=7, chunk_size=chunk_size)
    naive = mc_dropout(model, x, samples=6, seed=7, path="naive")
    assert fast.path == "fast" and naive.path == "naive"
    torch.testing.assert_close(fast.samples, naive.samples, atol=1e-6, rtol=0)
    assert not torch.equal(fast.samples[0], fast.samples[1])


def test_tiny_memory_limit_gives_one_sample_per_chunk_and_the_same_samples():
    model, x = mlp(), images(5)
    small = mc_dropout(model, x, samples=6, seed=2, max_memory_mb=1e-6)
    large = mc_dropout(model, x, samples=6, seed=2, chunk_size=6)
    torch.testing.assert_close(small.samples, large.samples, atol=1e-6, rtol=0)


def own_dropout_samples(model: nn.Module, x: torch.Tensor, samples: int) -> torch.Tensor:
    """The framework's own dropout (torch/timm code, global RNG), everything else in eval mode.

    For timm models only the head runs T times (on features computed once in eval mode): timm's
    functional ``F.dropout`` in ``forward_head`` reads the top-level ``training`` flag only.
    """
    model.eval()
    torch.manual_seed(123)
    with torch.no_grad():
        if hasattr(model, "forward_head"):
            features = model.forward_features(x)
            model.training = True
            out = torch.stack([model.forward_head(features).softmax(-1) for _ in range(samples)])
        else:
            for m in model.modules():
                if isinstance(m, nn.modules.dropout._DropoutNd):
                    m.train()
            out = torch.stack([model(x).softmax(-1) for _ in range(samples)])
    model.eval()
    return out


@pytest.mark.parametrize("case", ["resnet18", "mlp_dropout", "mlp_alpha_dropout_selu"])
def test_independent_masks_agree_with_the_frameworks_own_dropout_within_sampling_error(case):
    """Means of T=400 samples agree within 5 standard errors per (input, class).

    Tolerance: |mean_a - mean_b| <= 5 * sqrt(var_a / T + var_b / T) + 1e-6, the difference of two
    independent Monte-Carlo means; a wrong rate or scaling (e.g. forgetting 1/(1-p)) breaks it.
    """
    model, x, t = FAST_VS_NAIVE[case](), images(4), 400
    ours = mc_dropout(model, x, samples=t, seed=5).samples
    theirs = own_dropout_samples(model, x, t)
    se = (ours.var(0) / t + theirs.var(0) / t).sqrt()
    gap = (ours.mean(0) - theirs.mean(0)).abs()
    assert bool((gap <= 5 * se + 1e-6).all()), f"max gap / se = {float((gap / (se + 1e-12)).max()):.2f}"
    assert float(se.max()) > 0


def test_model_without_dropout_is_refused_with_a_clear_error():
    x = images(2)
    for model in (mlp(dropout=0.0), timm_model("resnet18", drop_rate=0.0)):
        with pytest.raises(LtrainError, match="has no dropout"):
            mc_dropout(model, x, samples=5, seed=0)


def test_dropout_in_the_trunk_falls_back_to_the_naive_path_and_says_why():
    model = timm_model("vit_tiny_patch16_224", depth=2, drop_path_rate=0.2)
    x = images(3)
    pred = mc_dropout(model, x, samples=4, seed=0, drop_path=True)
    assert pred.path == "naive" and "forward_features" in pred.note
    assert any("drop_path" in s for s in pred.sites)
    with pytest.raises(LtrainError, match=r"mc.path=fast is not possible"):
        mc_dropout(model, x, samples=4, seed=0, drop_path=True, path="fast")


def test_classifier_module_is_unwrapped_and_summaries_have_the_right_shapes():
    net = mlp()
    module = ClassifierModule(net, 10, optimizer=torch.optim.Adam)
    x = images(6)
    pred = mc_dropout(module, x, samples=5, seed=1)
    direct = mc_dropout(net, x, samples=5, seed=1)
    assert torch.equal(pred.samples, direct.samples)
    assert pred.samples.shape == (5, 6, 10) and pred.mean.shape == (6, 10) and pred.std.shape == (6, 10)
    torch.testing.assert_close(pred.mean.sum(-1), torch.ones(6))
    assert pred.entropy.shape == pred.mutual_info.shape == pred.agreement.shape == (6,)
    assert bool((pred.mutual_info >= 0).all()) and bool((pred.entropy <= math.log(10) + 1e-5).all())
    assert bool(((pred.agreement > 0) & (pred.agreement <= 1)).all())


@pytest.mark.parametrize(
    "kwargs, match", [({"samples": 0}, "at least 1"), ({"path": "quick"}, "one of"), ({"chunk_size": 0}, "positive")]
)
def test_bad_arguments_say_what_is_valid(kwargs, match):
    with pytest.raises(LtrainError, match=match):
        mc_dropout(mlp(), images(2), **{"samples": 3, **kwargs})
