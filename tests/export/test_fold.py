"""fold_batchnorm: exact folds on the cases that broke other folders, honest reasons for what it leaves."""

from __future__ import annotations

import pytest
import torch
from timm.layers import BatchNormAct2d, MixedConv2d, create_conv2d
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ltrain.export import fold_batchnorm
from ltrain.export.stats import randomize_batchnorm_
from ltrain.models import build_mlp


def bn_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


def fold_and_check(model: nn.Module, x: torch.Tensor, seed: int = 0, tol: float = 1e-5):
    """Randomise BN statistics, fold, and assert the folded outputs equal the original's (relative to scale)."""
    randomize_batchnorm_(model, seed).eval()
    with torch.no_grad():
        expected = model(x)
    folded, report = fold_batchnorm(model, x)
    with torch.no_grad():
        got = folded(x)
    scale = expected.abs().max().item()
    assert (got - expected).abs().max().item() <= tol * scale, report.summary()
    assert report.rel_diff <= tol
    return folded, report


class Residual(nn.Module):
    """conv -> BN, and the conv output ALSO feeds the sum: the conv must keep computing its raw output."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


class SharedConv(nn.Module):
    """One conv called twice, each call followed by its own BN: folding either BN would change both calls."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.bn1, self.bn2 = nn.BatchNorm2d(4), nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn1(self.conv(x)) + self.bn2(self.conv(x * 2))


class BnFeedsTwo(nn.Module):
    """BN output feeds a Linear and the return value: it cannot be pushed into the Linear."""

    def __init__(self):
        super().__init__()
        self.bn, self.fc = nn.BatchNorm1d(6), nn.Linear(6, 3)

    def forward(self, x):
        y = self.bn(x)
        return torch.cat([self.fc(y), y], 1)


class Tokens(nn.Module):
    """Linear on (N, L, C) tokens, then BatchNorm1d(L): BN normalises dim 1 (tokens), not the Linear's features.

    L == C on purpose: a folder that matches by shape alone folds it silently and wrongly.
    """

    def __init__(self, n=8):
        super().__init__()
        self.fc, self.bn = nn.Linear(n, n), nn.BatchNorm1d(n)

    def forward(self, x):
        return self.bn(self.fc(x))


def conv_bn(conv: nn.Module, bn: nn.Module) -> nn.Sequential:
    return nn.Sequential(conv, bn)


FOLDED_AFTER_LAYER = {
    "depthwise_conv_bias": (conv_bn(nn.Conv2d(6, 6, 3, padding=1, groups=6), nn.BatchNorm2d(6)), (2, 6, 9, 9)),
    "depthwise_conv_no_bias": (
        conv_bn(nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False), nn.BatchNorm2d(6)),
        (2, 6, 9, 9),
    ),
    "grouped_conv_bias": (conv_bn(nn.Conv2d(6, 9, 3, groups=3), nn.BatchNorm2d(9)), (2, 6, 9, 9)),
    "grouped_conv_no_bias": (conv_bn(nn.Conv2d(6, 9, 3, groups=3, bias=False), nn.BatchNorm2d(9)), (2, 6, 9, 9)),
    "conv_transpose_groups": (
        conv_bn(nn.ConvTranspose2d(6, 9, 3, stride=2, groups=3), nn.BatchNorm2d(9)),
        (2, 6, 5, 5),
    ),
    "conv_transpose_groups_no_bias": (
        conv_bn(nn.ConvTranspose2d(4, 6, 2, groups=2, bias=False), nn.BatchNorm2d(6)),
        (2, 4, 5, 5),
    ),
    "conv_transpose1d": (conv_bn(nn.ConvTranspose1d(4, 6, 3), nn.BatchNorm1d(6)), (2, 4, 7)),
    "conv1d": (conv_bn(nn.Conv1d(3, 5, 3), nn.BatchNorm1d(5)), (2, 3, 11)),
    "conv3d": (conv_bn(nn.Conv3d(2, 4, 3, padding=1), nn.BatchNorm3d(4)), (2, 2, 5, 5, 5)),
    "conv_bn_affine_false": (conv_bn(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5, affine=False)), (2, 3, 8, 8)),
    "linear_bn": (conv_bn(nn.Linear(7, 5), nn.BatchNorm1d(5)), (4, 7)),
    "linear_bn_affine_false": (conv_bn(nn.Linear(7, 5, bias=False), nn.BatchNorm1d(5, affine=False)), (4, 7)),
    "timm_batchnormact_relu": (
        conv_bn(nn.Conv2d(3, 5, 3, bias=False), BatchNormAct2d(5, act_layer=nn.ReLU)),
        (2, 3, 8, 8),
    ),
    "timm_batchnormact_silu": (
        conv_bn(nn.Conv2d(3, 5, 1, bias=False), BatchNormAct2d(5, act_layer=nn.SiLU)),
        (2, 3, 8, 8),
    ),
    "timm_conv2d_same_padding": (
        conv_bn(create_conv2d(3, 6, 3, stride=2, padding="same"), BatchNormAct2d(6)),
        (2, 3, 9, 9),
    ),
}


def test_bn_after_timm_mixed_conv_folds_slice_by_slice_into_each_conv_of_the_concat():
    """MixedConv2d splits the channels, runs one conv per split and concatenates: each conv absorbs its slice."""
    model = conv_bn(MixedConv2d(8, 8, kernel_size=[3, 5, 7], depthwise=True), BatchNormAct2d(8, act_layer=nn.SiLU))
    folded, report = fold_and_check(model, torch.randn(2, 8, 9, 9))
    assert [b.into for b in report.folded] == [("0.0", "0.1", "0.2")]
    assert bn_modules(folded) == []


@pytest.mark.parametrize("case", sorted(FOLDED_AFTER_LAYER))
def test_bn_after_a_layer_folds_exactly_and_disappears(case):
    model, shape = FOLDED_AFTER_LAYER[case]
    folded, report = fold_and_check(model, torch.randn(shape, generator=torch.Generator().manual_seed(1)))
    assert len(report.folded) == 1 and not report.skipped, report.summary()
    assert report.folded[0].side == "before" and report.folded[0].into == ("0",)
    assert bn_modules(folded) == []


def test_batchnormact_keeps_its_activation_after_folding():
    model = conv_bn(nn.Conv2d(3, 5, 3), BatchNormAct2d(5, act_layer=nn.ReLU))
    folded, _ = fold_and_check(model, torch.randn(2, 3, 8, 8))
    assert isinstance(folded[1].act, nn.ReLU)
    with torch.no_grad():  # the activation is really applied: no negative outputs
        assert folded(torch.randn(4, 3, 8, 8)).min() >= 0


def test_flatten_bn_linear_folds_into_the_linear():
    """The book's Flatten -> BN -> Dense: the BN precedes the Linear and folds into its inputs."""
    model = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(12), nn.Linear(12, 4))
    folded, report = fold_and_check(model, torch.randn(5, 3, 2, 2))
    assert [(b.name, b.into, b.side) for b in report.folded] == [("1", ("2",), "after")]
    assert bn_modules(folded) == []


def test_mlp_with_bn_after_the_activation_folds_into_the_next_linear_through_eval_dropout():
    model = build_mlp(16, 3, hidden=(8, 8, 8), activation="elu", batch_norm="after", dropout=0.3)
    _folded, report = fold_and_check(model, torch.randn(6, 16))
    assert len(report.folded) == 3 and all(b.side == "after" for b in report.folded)
    assert [b.into for b in report.folded] == [("hidden1.linear",), ("hidden2.linear",), ("head",)]


def test_mlp_with_bn_before_the_activation_folds_into_its_bias_free_linear():
    model = build_mlp(16, 3, hidden=(8, 8), batch_norm="before")
    folded, report = fold_and_check(model, torch.randn(6, 16))
    assert [b.into for b in report.folded] == [("hidden0.linear",), ("hidden1.linear",)]
    assert folded.hidden0.linear.bias is not None  # the BN's shift became the Linear's bias


def test_bn_before_an_unpadded_grouped_conv_folds_into_its_inputs():
    model = nn.Sequential(nn.BatchNorm2d(6), nn.Conv2d(6, 4, 3, groups=2, stride=2))
    _folded, report = fold_and_check(model, torch.randn(2, 6, 9, 9))
    assert [(b.into, b.side) for b in report.folded] == [(("1",), "after")]


NOT_FOLDED = {
    # case: (model, input shape, words the reason must contain)
    "bn_before_zero_padded_conv": (
        nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3, padding=1)),
        (2, 3, 6, 6),
        "zero-pads",
    ),
    "bn_before_conv_transpose": (
        nn.Sequential(nn.BatchNorm2d(3), nn.ConvTranspose2d(3, 4, 3)),
        (2, 3, 6, 6),
        "transposed conv",
    ),
    "conv_output_feeds_two_consumers": (Residual(), (2, 4, 6, 6), "feeds 2 ops"),
    "bn_output_feeds_two_consumers": (BnFeedsTwo(), (4, 6), "feeds 2 ops"),
    "linear_on_3d_tokens_then_bn1d": (Tokens(), (2, 8, 8), "3-D"),
    "bn_after_relu": (
        nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.BatchNorm2d(4)),
        (2, 3, 6, 6),
        "not the output of a conv/linear",
    ),
    "bn_without_running_stats": (
        conv_bn(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, track_running_stats=False)),
        (2, 3, 6, 6),
        "track_running_stats=False",
    ),
}


@pytest.mark.parametrize("case", sorted(NOT_FOLDED))
def test_bn_that_is_not_exactly_foldable_is_left_with_a_reason(case):
    model, shape, words = NOT_FOLDED[case]
    folded, report = fold_and_check(model, torch.randn(shape, generator=torch.Generator().manual_seed(2)))
    assert not report.folded, report.summary()
    assert len(report.skipped) == 1 and words in report.skipped[0].reason, report.summary()
    assert len(bn_modules(folded)) == 1


def test_a_conv_called_twice_is_not_folded():
    _folded, report = fold_and_check(SharedConv(), torch.randn(2, 4, 5, 5))
    assert not report.folded and len(report.skipped) == 2
    assert all("used 2 times" in b.reason for b in report.skipped), report.summary()


def test_linear_on_tokens_is_what_a_shape_matching_folder_gets_wrong():
    """The trap is real: folding per Linear feature (dim -1) gives a different answer from the BN (dim 1)."""
    model = randomize_batchnorm_(Tokens()).eval()
    x = torch.randn(2, 8, 8)
    wrong = torch.nn.utils.fusion.fuse_linear_bn_eval(model.fc, model.bn)
    with torch.no_grad():
        assert (wrong(x) - model(x)).abs().max() > 1e-2


def test_input_model_is_untouched():
    model = randomize_batchnorm_(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded, _ = fold_batchnorm(model, torch.randn(2, 3, 6, 6))
    assert model.training and not folded.training
    assert isinstance(model[1], nn.BatchNorm2d) and isinstance(folded[1], nn.Identity)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


class Aliased(nn.Module):
    """The same BN object reachable under two names (``body.1`` and ``alias``), called once."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
        self.alias = self.body[1]

    def forward(self, x):
        return self.body(x)


def test_a_bn_registered_under_two_names_is_replaced_under_both():
    folded, report = fold_and_check(Aliased(), torch.randn(2, 3, 4, 4))
    assert len(report.folded) == 1 and bn_modules(folded) == []
    assert isinstance(folded.alias, nn.Identity)
