"""Every callback under precision='bf16-mixed' and with a torch.compile'd network on CPU (tiny runs)."""

from __future__ import annotations

import pytest
import torch

from ltrain.callbacks import EpochSeed, FreezeSchedule, FrozenFeatureCache, MaxNorm, TrainingDiagnostics
from tests.plugin.outside import NetModule, digit_loaders, mlp, trainer

SETUPS = {
    "bf16-mixed": {"precision": "bf16-mixed", "compiled": False},
    "compiled": {"precision": "32-true", "compiled": True},
}


def _fit(setup: str, callbacks: list, tmp_path) -> tuple[NetModule, torch.nn.Module]:
    net = mlp(0)
    module = NetModule(torch.compile(net, backend="eager") if SETUPS[setup]["compiled"] else net, lr=3e-2)
    train, val = digit_loaders(n_train=96, n_val=32)
    torch.manual_seed(0)
    run = trainer([EpochSeed(0), *callbacks], epochs=2, precision=SETUPS[setup]["precision"])
    run.fit(module, train, val)
    return module, net


@pytest.mark.parametrize("setup", list(SETUPS))
def test_cache_freeze_and_max_norm_match_the_uncached_run(setup, tmp_path):
    _, plain = _fit(setup, [FreezeSchedule([{"trainable": "top:2"}]), MaxNorm(0.6)], tmp_path)
    cache = FrozenFeatureCache()
    _, cached = _fit(setup, [cache, MaxNorm(0.6), FreezeSchedule([{"trainable": "top:2"}])], tmp_path)
    expected_dtype = torch.bfloat16 if setup == "bf16-mixed" else torch.float32
    assert cache.cached["train"].features.dtype == expected_dtype  # the dtype the trunk produced
    for name, value in plain.state_dict().items():
        torch.testing.assert_close(cached.state_dict()[name], value, rtol=0, atol=1e-5, msg=name)
    assert cached[5].weight.norm(dim=1).max() <= 0.6 * (1 + 1e-6)
    assert torch.equal(cached[1].weight, mlp(0)[1].weight)  # frozen: untouched


@pytest.mark.parametrize("setup", list(SETUPS))
def test_diagnostics_record_the_network_layers(setup, tmp_path):
    diagnostics = TrainingDiagnostics(every_n_steps=1, num_classes=10, out_dir=str(tmp_path), plots=False)
    _fit(setup, [diagnostics], tmp_path)
    assert diagnostics.history and diagnostics.stop_message is None
    layers = {k for row in diagnostics.history for k in row["layers"]}
    assert {"2", "4", "6"} <= layers, layers  # the three ReLUs of the user's Sequential
