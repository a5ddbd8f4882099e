"""Initialisers and activations by name: sampled variances match the formulas, activations match theirs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ltrain.errors import LtrainError
from ltrain.models import build_mlp, init_weights, make_activation, variance_scaling_
from ltrain.models.activations import ACTIVATIONS
from ltrain.models.init import SCHEMES

FAN_IN, FAN_OUT = 1000, 1000


def expected_variance(scheme: str, fan_in: int, fan_out: int) -> float:
    """The chapter's sigma^2: Glorot 1/fan_avg, He 2/fan_in, LeCun 1/fan_in."""
    family = scheme.split("_")[0]
    return {"glorot": 2 / (fan_in + fan_out), "he": 2 / fan_in, "lecun": 1 / fan_in}[family]


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_a_1000x1000_layer_has_the_formula_variance_and_zero_bias(scheme):
    torch.manual_seed(0)
    layer = nn.Linear(FAN_IN, FAN_OUT)
    init_weights(layer, scheme)
    var = expected_variance(scheme, FAN_IN, FAN_OUT)
    assert layer.weight.var().item() == pytest.approx(var, rel=0.05)
    assert layer.weight.mean().item() == pytest.approx(0.0, abs=0.01 * math.sqrt(var))
    assert torch.count_nonzero(layer.bias) == 0
    if scheme.endswith("uniform"):  # r = sqrt(3 sigma^2): the samples fill [-r, r] and stay inside it
        r = math.sqrt(3 * var)
        assert layer.weight.abs().max().item() <= r
        assert layer.weight.abs().max().item() > 0.999 * r


@pytest.mark.parametrize("mode,fan", [("fan_in", 300), ("fan_out", 1200), ("fan_avg", 750)])
@pytest.mark.parametrize("distribution", ["normal", "uniform"])
def test_variance_scaling_uses_the_chosen_fan_and_distribution(mode, fan, distribution):
    torch.manual_seed(0)
    w = torch.empty(1200, 300)  # (out, in): fan_in 300, fan_out 1200
    variance_scaling_(w, scale=3.0, mode=mode, distribution=distribution)
    assert w.var().item() == pytest.approx(3.0 / fan, rel=0.05)


def test_conv_fans_count_the_kernel():
    torch.manual_seed(0)
    conv = nn.Conv2d(40, 50, kernel_size=5)  # fan_in 40*25 = 1000
    init_weights(conv, "he_normal")
    assert conv.weight.var().item() == pytest.approx(2 / 1000, rel=0.05)


def test_variance_scaling_is_a_config_path_of_the_mlp():
    torch.manual_seed(0)
    mlp = build_mlp(1000, 10, hidden=[1000], init={"scale": 0.5, "mode": "fan_avg", "distribution": "uniform"})
    assert mlp.hidden0.linear.weight.var().item() == pytest.approx(0.5 / 1000, rel=0.05)


def test_unknown_initialiser_names_close_matches():
    with pytest.raises(LtrainError, match="he_normal"):
        init_weights(nn.Linear(2, 2), "he_norml")


X = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.5, 2.0])
FORMULAS = {
    "sigmoid": ({}, lambda x: 1 / (1 + math.exp(-x))),
    "tanh": ({}, math.tanh),
    "hardtanh": ({}, lambda x: max(-1.0, min(1.0, x))),
    "softsign": ({}, lambda x: x / (1 + abs(x))),
    "arctan": ({}, math.atan),
    "bent_identity": ({}, lambda x: (math.sqrt(x * x + 1) - 1) / 2 + x),
    "relu": ({}, lambda x: max(0.0, x)),
    "leaky_relu": ({"alpha": 0.2}, lambda x: x if x > 0 else 0.2 * x),
    "prelu": ({"alpha": 0.25}, lambda x: x if x > 0 else 0.25 * x),
    "elu": ({"alpha": 1.0}, lambda x: x if x > 0 else math.exp(x) - 1),
    "selu": ({}, lambda x: 1.0507009873554805 * (x if x > 0 else 1.6732632423543772 * (math.exp(x) - 1))),
    "swish": ({"beta": 2.0}, lambda x: x / (1 + math.exp(-2.0 * x))),
    "identity": ({}, lambda x: x),
}


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_activation_matches_its_formula_at_fixed_points(name):
    kwargs, f = FORMULAS[name]
    got = make_activation(name, **kwargs).eval()(X)
    assert got.tolist() == pytest.approx([f(x) for x in X.tolist()], abs=1e-6)


def test_every_named_activation_has_a_formula_test_or_a_behaviour_test():
    assert set(ACTIVATIONS) == set(FORMULAS) | {"rrelu", "maxout"}


def test_rrelu_is_random_while_training_and_uses_the_mean_slope_in_eval():
    act = make_activation("rrelu", lower=0.1, upper=0.3)
    x = -torch.ones(10_000)
    torch.manual_seed(0)
    slopes = -act.train()(x)
    assert slopes.min() >= 0.1 and slopes.max() <= 0.3 and slopes.std() > 0.05  # ~U(0.1, 0.3): std 0.058
    assert (-act.eval()(x)).unique().tolist() == pytest.approx([0.2])
    assert act.eval()(torch.tensor([2.0])).item() == 2.0


def test_prelu_slope_receives_a_gradient():
    act = make_activation("prelu", alpha=0.25)
    x = torch.tensor([-2.0, -1.0, 3.0])
    act(x).sum().backward()
    assert act.weight.grad.item() == pytest.approx(-3.0)  # d/d(alpha) of alpha*x summed over x < 0


def test_learnable_swish_beta_is_a_parameter_with_a_gradient():
    act = make_activation("swish", beta=1.0, learnable=True)
    assert [n for n, _ in act.named_parameters()] == ["beta"]
    act(torch.tensor([1.0])).sum().backward()
    s = 1 / (1 + math.exp(-1.0))
    assert act.beta.grad.item() == pytest.approx(s * (1 - s))  # d/d(beta) x*sigmoid(beta x) at x=1, beta=1
    assert list(make_activation("swish").parameters()) == []  # fixed beta: a buffer


def test_maxout_takes_the_max_of_k_pieces_and_the_mlp_gets_k_times_the_parameters():
    act = make_activation("maxout", k=3)
    x = torch.tensor([[1.0, 5.0, 2.0, -1.0, -4.0, -2.0]])  # two units of three pieces
    assert act(x).tolist() == [[5.0, -1.0]]
    relu_mlp = build_mlp(20, 4, hidden=[8], activation="relu")
    maxout_mlp = build_mlp(20, 4, hidden=[8], activation="maxout", activation_kwargs={"k": 3})
    n = lambda m: sum(p.numel() for p in m.hidden0.parameters())  # noqa: E731
    assert n(maxout_mlp) == 3 * n(relu_mlp)
    assert maxout_mlp(torch.randn(5, 20)).shape == (5, 4)


def test_unknown_activation_names_close_matches_and_bad_kwargs_say_which_key():
    with pytest.raises(LtrainError, match="leaky_relu"):
        make_activation("leaky_rel")
    with pytest.raises(LtrainError, match="activation_kwargs"):
        make_activation("relu", alpha=0.1)
