"""A BN no layer can absorb becomes the same per-channel affine map, and the ONNX file has no BN node at all."""

from __future__ import annotations

import onnx
import torch
from torch import nn

from ltrain.export.fold import ChannelAffine, fold_batchnorm


class SumThenBN(nn.Module):
    """conv + conv -> BN (after a sum: unfoldable) -> ReLU -> padded conv (BN before padding: unfoldable too)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 1)
        self.bn = nn.BatchNorm2d(8)
        self.out = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        return self.out(torch.relu(self.bn(self.a(x) + self.b(x))))


def _randomised(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                (
                    m.running_mean.uniform_(-1, 1),
                    m.running_var.uniform_(0.5, 2),
                    m.weight.uniform_(0.5, 2),
                    m.bias.uniform_(-1, 1),
                )
    return model.eval()


def test_unfoldable_bn_becomes_an_exact_affine_map_without_a_bn_node_in_onnx(tmp_path):
    model = _randomised(SumThenBN())
    x = torch.randn(2, 3, 16, 16)
    kept, report = fold_batchnorm(model, x)
    assert [s.name for s in report.skipped] == ["bn"] and isinstance(kept.bn, nn.BatchNorm2d)
    affine, report = fold_batchnorm(model, x, unfoldable="affine")
    assert [s.name for s in report.skipped] == ["bn"]  # still reported as not folded, with its reason
    assert isinstance(affine.bn, ChannelAffine)
    torch.testing.assert_close(affine(x), model(x), rtol=1e-5, atol=1e-5)
    path = tmp_path / "m.onnx"
    torch.onnx.export(affine, (x,), str(path), dynamo=False)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "BatchNormalization" not in ops and {"Mul", "Add"} <= ops
