"""fold_batchnorm on real timm models (a handful here; the whole bench list under -m slow) and in low precision."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_weights

from ltrain.export import fold_batchnorm
from ltrain.export.stats import randomize_batchnorm_

BENCH_LIST = Path(__file__).resolve().parents[2] / "bench" / "fold_models.txt"

# Small, fast representatives of the families (the whole bench list runs under -m slow): plain BatchNorm2d
# (resnet), BatchNormAct2d with hard-swish and squeeze-excitation (mobilenetv3, lcnet), RegNet's
# BatchNormAct2d blocks. timm's MixedConv2d and "same" padding are unit-tested in test_fold.py.
HANDFUL = ["resnet10t", "mobilenetv3_small_050", "regnetx_002", "lcnet_050"]


def bench_models() -> list[str]:
    lines = BENCH_LIST.read_text().splitlines()
    return [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip()]


def check_model(name: str, size: int = 32) -> dict:
    """Fold a timm model with random BN statistics; assert 1e-4 relative equality and reasons for all left."""
    model = randomize_batchnorm_(timm.create_model(name, pretrained=False), seed=0).eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x)
    folded, report = fold_batchnorm(model, x)
    with torch.no_grad():
        got = folded(x)
    rel = ((got - expected).abs().max() / expected.abs().max()).item()
    assert rel <= 1e-4, f"{name}: relative difference {rel:.3g}\n{report.summary()}"
    remaining = [n for n, m in folded.named_modules() if isinstance(m, _BatchNorm)]
    assert sorted(remaining) == sorted(b.name for b in report.skipped)  # every BN left is named ...
    assert all(b.reason for b in report.skipped)  # ... with a reason
    return {
        "name": name,
        "rel": rel,
        "total": report.total,
        "folded": len(report.folded),
        "follows": report.follows_layer,
        "folded_following": report.folded_following_layer,
    }


@pytest.mark.parametrize("name", HANDFUL)
def test_timm_model_folds_exactly_and_names_what_it_left(name):
    stats = check_model(name)
    assert stats["folded_following"] == stats["follows"] > 0, stats


def test_the_bench_list_has_at_least_30_timm_models_from_many_families():
    names = bench_models()
    assert len(names) >= 30 and len(set(names)) == len(names)
    assert all(timm.is_model(n) for n in names)
    for required in (
        "resnet50",
        "efficientnet_b0",
        "mobilenetv3_large_100",
        "densenet121",
        "vgg11_bn",
        "tf_efficientnet_b0",
        "mixnet_s",
        "dpn68",
        "cspdarknet53",
        "convnext_atto",
    ):
        assert required in names


@pytest.mark.slow
def test_every_bench_model_folds_exactly_and_99_percent_of_bn_after_a_layer():
    rows = [check_model(name, size=96 if name == "inception_v3" else 64) for name in bench_models()]
    follows = sum(r["follows"] for r in rows)
    folded_following = sum(r["folded_following"] for r in rows)
    for r in rows:
        print(r)
    print(
        f"folded {folded_following} of {follows} BN that follow a conv/linear; "
        f"{sum(r['folded'] for r in rows)} of {sum(r['total'] for r in rows)} BN in all"
    )
    assert folded_following >= 0.99 * follows


def conv_bn_stack(dtype: torch.dtype) -> nn.Sequential:
    torch.manual_seed(0)
    layers = []
    for _ in range(3):
        layers += [nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8, eps=1e-3), nn.ReLU()]
    model = randomize_batchnorm_(nn.Sequential(*layers), seed=3).eval()
    for m in model.modules():  # small variances: gamma / sigma is large and far from a bf16/fp16 value
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.mul_(0.01)
    return model.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_model_folds_in_fp32_and_matches_the_unfolded_model_in_that_dtype(dtype):
    model = conv_bn_stack(dtype)
    x = torch.randn(2, 8, 10, 10, generator=torch.Generator().manual_seed(1))
    folded, report = fold_batchnorm(model, x.to(dtype))
    assert all(p.dtype == dtype for p in folded.parameters())

    eps = torch.finfo(dtype).eps
    for i in (0, 3, 6):
        conv, bn = model[i], model[i + 1]
        exact = conv.weight.double() * (bn.weight.double() / (bn.running_var.double() + bn.eps).sqrt()).view(
            -1, 1, 1, 1
        )
        half_ulp = 0.5 * eps * exact.abs() * (1 + 1e-5) + torch.finfo(dtype).tiny * eps
        # Folded in fp32, rounded once: every weight is the correctly rounded exact value ...
        assert ((folded[i].weight.double() - exact).abs() <= half_ulp).all()
        # ... which a fold computed in the low dtype itself (torch's fuser on the low-precision tensors) misses.
        naive_w, _ = fuse_conv_bn_weights(
            conv.weight, None, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
        )
        assert ((naive_w.double() - exact).abs() > half_ulp).float().mean() > 0.03

    # Outputs: folded vs unfolded, both in the low dtype, within that dtype's rounding.
    with torch.no_grad():
        want, got = model(x.to(dtype)).float(), folded(x.to(dtype)).float()
    rel = ((got - want).abs().max() / want.abs().max()).item()
    assert rel < {torch.float16: 5e-3, torch.bfloat16: 4e-2}[dtype], rel
    assert report.rel_diff == pytest.approx(rel, rel=1e-6, abs=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("name", bench_models())
def test_folded_bench_model_exports_to_onnx_without_any_batch_norm(name, tmp_path):
    """Each folded list model in ONNX Runtime: max difference <= 1e-4 vs PyTorch, and no BatchNormalization
    node at all (a BN no exact fold removes becomes the same per-channel affine map, as ltrain-export does)."""
    from ltrain.export.onnx import export_onnx, onnx_op_counts, ort_max_diff

    model = randomize_batchnorm_(timm.create_model(name, pretrained=False), seed=0).eval()
    size = 96 if name == "inception_v3" else 64  # its stem needs >= 75x75
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    folded, report = fold_batchnorm(model, x, unfoldable="affine")
    path = export_onnx(folded, x, tmp_path / f"{name}.onnx")
    bn_nodes = onnx_op_counts(path).get("BatchNormalization", 0)
    diff, scale = ort_max_diff(path, folded, torch.randn(2, 3, size, size))
    print(
        f"{name}: BN nodes {bn_nodes}, BN left by the fold {len(report.skipped)}, ORT max diff {diff:.2e} "
        f"(output scale {scale:.3g})"
    )
    assert bn_nodes == 0
    assert diff <= 1e-4 * max(scale, 1.0)
