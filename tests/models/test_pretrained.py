"""Weight sources: imagenet_lite0 (real ImageNet weights mapped by name), zoo: head handling, files, timm offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from ltrain.errors import LtrainError
from ltrain.models import build_model
from ltrain.models.pretrained import (
    lite0_key_map,
    lite0_weights_path,
    load_pretrained,
    read_weights_file,
)
from ltrain.zoo import Zoo

LITE0 = "tf_efficientnet_lite0"


@pytest.fixture(scope="module")
def lite0_imagenet() -> torch.nn.Module:
    model = timm.create_model(LITE0, num_classes=1000).eval()
    return load_pretrained(model, "imagenet_lite0", LITE0)


def test_lite0_keys_map_by_name_onto_every_timm_tensor_with_equal_shapes():
    source = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    target = timm.create_model(LITE0).state_dict()
    mapping = lite0_key_map(list(source), [len(s) for s in timm.create_model(LITE0).blocks])
    assert len(source) == 296 and len(mapping) == 296
    assert sorted(mapping.values()) == sorted(target)  # one-to-one onto timm's names
    assert all(source[k].shape == target[v].shape for k, v in mapping.items())
    # cross-check only: the name mapping agrees with the positional order of both state dicts
    assert [mapping[k] for k in source] == list(target)
    assert mapping["_blocks.0._project_conv.weight"] == "blocks.0.0.conv_pw.weight"  # depthwise-separable block
    assert mapping["_blocks.15._project_conv.weight"] == "blocks.6.0.conv_pwl.weight"  # last inverted residual
    assert mapping["_fc.weight"] == "classifier.weight" and mapping["_bn1.weight"] == "bn2.weight"


def test_lite0_classifies_sklearn_sample_photos_sensibly(lite0_imagenet):
    from PIL import Image
    from sklearn.datasets import load_sample_images
    from timm.data import ImageNetInfo, create_transform, resolve_data_config

    transform = create_transform(**resolve_data_config({}, model=lite0_imagenet))
    photos = load_sample_images()
    batch = torch.stack([transform(Image.fromarray(img)) for img in photos.images])
    with torch.no_grad():
        probs = lite0_imagenet(batch).softmax(-1)
    info = ImageNetInfo()
    top5 = [[info.index_to_description(int(i)).split(",")[0] for i in p.topk(5).indices] for p in probs]
    names = [Path(f).name for f in photos.filenames]
    assert names == ["china.jpg", "flower.jpg"]
    # china.jpg is a temple on a hillside; flower.jpg a daisy-like flower
    assert top5[0][0] in {"palace", "monastery", "bell cote", "pagoda", "stupa"}, top5[0]
    assert "daisy" in top5[1], top5[1]
    assert probs[1, [i for i in range(1000) if info.index_to_description(i).startswith("daisy")]].item() > 0.2


def test_lite0_with_other_classes_drops_the_1000_class_classifier_and_adapts_one_channel(lite0_imagenet):
    rgb = build_model({"name": LITE0, "pretrained": "imagenet_lite0"}, 10, (3, 32, 32))
    assert torch.equal(rgb.conv_stem.weight, lite0_imagenet.conv_stem.weight)
    assert torch.equal(rgb.blocks[6][0].conv_pwl.weight, lite0_imagenet.blocks[6][0].conv_pwl.weight)
    assert rgb.classifier.weight.shape == (10, 1280)
    grey = build_model({"name": LITE0, "pretrained": "imagenet_lite0"}, 10, (1, 32, 32))
    torch.testing.assert_close(grey.conv_stem.weight, lite0_imagenet.conv_stem.weight.sum(1, keepdim=True))
    with pytest.raises(LtrainError, match="tf_efficientnet_lite0 only"):
        build_model({"name": "resnet18", "pretrained": "imagenet_lite0"}, 10, (3, 32, 32))


def test_zoo_source_skips_a_classifier_of_other_classes_and_refuses_other_mismatches():
    zoo = Zoo()
    torch.manual_seed(0)
    five = build_model({"name": "test_resnet"}, 5, (1, 32, 32))
    zoo.push(five, "five", input_shape=(1, 32, 32))
    three = build_model({"name": "test_resnet", "pretrained": "zoo:five"}, 3, (1, 32, 32))
    assert torch.equal(three.conv1[0].weight, five.conv1[0].weight)
    assert three.fc.weight.shape == (3, five.fc.in_features)  # the fresh head of the new task
    features = build_model({"name": "test_resnet", "pretrained": "zoo:five"}, 0, (1, 32, 32))  # headless
    assert torch.equal(features.conv1[0].weight, five.conv1[0].weight)
    with pytest.raises(
        LtrainError, match=r"differ in shape\n    conv1.0.weight: weights \(\d+, 1, 3, 3\) vs model \(\d+, 3, 3, 3\)"
    ):
        build_model({"name": "test_resnet", "pretrained": "zoo:five"}, 5, (3, 32, 32))
    with pytest.raises(LtrainError, match=r"the entry is a test_resnet, but model.name=resnet18"):
        build_model({"name": "resnet18", "pretrained": "zoo:five"}, 5, (1, 32, 32))

    mlp = build_model({"name": "mlp", "hidden": [16, 16]}, 5, (1, 28, 28))
    zoo.push(mlp, "mlp", model_cfg={"name": "mlp", "hidden": [16, 16]}, input_shape=(1, 28, 28))
    other_head = build_model({"name": "mlp", "hidden": [16, 16], "pretrained": "zoo:mlp"}, 2, (1, 28, 28))
    assert torch.equal(other_head.hidden0.linear.weight, mlp.hidden0.linear.weight)
    with pytest.raises(LtrainError, match=r"hidden1.linear.weight: weights \(16, 16\) vs model \(32, 16\)"):
        build_model({"name": "mlp", "hidden": [16, 32], "pretrained": "zoo:mlp"}, 5, (1, 28, 28))
    with pytest.raises(LtrainError, match=r"(?s)missing from the weights.*hidden2"):
        build_model({"name": "mlp", "hidden": [16, 16, 16], "pretrained": "zoo:mlp"}, 5, (1, 28, 28))
    with pytest.raises(LtrainError, match=r"no zoo entry 'mpl' in .*catalog. Close matches: mlp"):
        build_model({"name": "mlp", "pretrained": "zoo:mpl"}, 5, (1, 28, 28))


def test_file_sources_safetensors_torch_and_lightning_checkpoint(tmp_path):
    torch.manual_seed(0)
    source = build_model({"name": "mlp", "hidden": [16]}, 4, (1, 8, 8))
    state = source.state_dict()
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save(state, tmp_path / "w.pt")
    lightning_like = {"epoch": 3, "state_dict": {f"model.{k}": v for k, v in state.items()}, "optimizer_states": []}
    torch.save(lightning_like, tmp_path / "w.ckpt")
    for name in ("w.safetensors", "w.pt", "w.ckpt"):
        model = build_model({"name": "mlp", "hidden": [16], "pretrained": str(tmp_path / name)}, 4, (1, 8, 8))
        assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items()), name


def test_corrupt_truncated_or_unsafe_files_fail_with_what_to_do(tmp_path):
    state = build_model({"name": "mlp", "hidden": [16]}, 4, (1, 8, 8)).state_dict()
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save(state, tmp_path / "w.pt")
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "cut.pt").write_bytes((tmp_path / "w.pt").read_bytes()[:300])
    torch.save({"weights": state, "fn": np.random.default_rng}, tmp_path / "pickled.pt")
    with pytest.raises(LtrainError, match=r"(?s)not a readable safetensors file.*Re-export or re-download"):
        read_weights_file(tmp_path / "cut.safetensors")
    with pytest.raises(LtrainError, match=r"(?s)not a readable torch file.*Re-export or re-download"):
        read_weights_file(tmp_path / "cut.pt")
    with pytest.raises(LtrainError, match="weights_only=True"):
        read_weights_file(tmp_path / "pickled.pt")
    with pytest.raises(LtrainError, match="no weights file at"):
        read_weights_file(tmp_path / "absent.safetensors")


def test_unknown_source_names_the_valid_ones():
    with pytest.raises(LtrainError, match=r"(?s)Did you mean imagenet_lite0.*zoo:NAME.*timm"):
        build_model({"name": "mlp", "hidden": [8], "pretrained": "imagenet_lite"}, 2, (1, 8, 8))
    with pytest.raises(LtrainError, match="needs a timm model"):
        build_model({"name": "mlp", "hidden": [8], "pretrained": "timm"}, 2, (1, 8, 8))
    with pytest.raises(LtrainError, match="timm has no public weights for resnetblur18"):
        build_model({"name": "resnetblur18", "pretrained": "timm"}, 2, (1, 32, 32))


def test_timm_source_offline_fails_naming_the_alternatives(monkeypatch):
    """No internet here. The hub's own offline switch (what HF_HUB_OFFLINE=1 sets) makes the failure immediate."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(LtrainError) as caught:
        build_model({"name": "resnet18", "pretrained": "timm"}, 3, (3, 32, 32))
    message = str(caught.value)
    assert "could not fetch timm's public weights for resnet18" in message
    assert "zoo:NAME" in message and "imagenet_lite0" in message and "path to a weights file" in message
