"""Data modules: deterministic disjoint splits, train-only statistics, subsets, caps, clear errors."""

from __future__ import annotations

import pytest
import torch

from ltrain.data import FashionMnistIdx, MnistEmbedded
from ltrain.data.subsets import stratified_split
from ltrain.errors import LtrainError


def _all_indices(dm):
    return {k: set(v.tolist()) for k, v in dm.split_indices.items()}


def test_split_is_deterministic_for_a_seed_and_disjoint():
    a, b = MnistEmbedded(split_seed=3), MnistEmbedded(split_seed=3)
    a.setup(), b.setup()
    for k in ("train", "val", "test"):
        assert torch.equal(a.split_indices[k], b.split_indices[k])
    parts = _all_indices(a)
    assert not parts["train"] & parts["val"] and not parts["train"] & parts["test"] and not parts["val"] & parts["test"]
    assert len(parts["train"]) + len(parts["val"]) + len(parts["test"]) == 5000
    c = MnistEmbedded(split_seed=4)
    c.setup()
    assert not torch.equal(a.split_indices["test"], c.split_indices["test"])


def test_split_is_stratified():
    labels = torch.arange(10).repeat_interleave(50)
    _train, val, test = stratified_split(labels, [1.0, 0.1, 0.2], seed=0)
    assert torch.bincount(labels[val]).tolist() == [5] * 10
    assert torch.bincount(labels[test]).tolist() == [10] * 10


def test_standardisation_statistics_come_from_the_train_split_only():
    dm = MnistEmbedded(split_seed=0)
    dm.setup()
    train_images = dm.splits["train"].images.float() / 255
    tf = dm.splits["train"].transform
    assert tf.mean[0] == pytest.approx(train_images.mean().item(), abs=1e-5)
    assert tf.std[0] == pytest.approx(train_images.std().item(), abs=1e-5)
    everything = torch.cat([dm.splits[k].images for k in ("train", "val", "test")]).float() / 255
    assert abs(tf.mean[0] - everything.mean().item()) > 1e-6  # not the statistics of all the data
    # the same transform (train statistics) is applied to val and test
    assert dm.splits["val"].transform.mean == tf.mean and dm.splits["test"].transform.std == tf.std
    x = torch.stack([dm.splits["train"][i][0] for i in range(len(dm.splits["train"]))])
    assert x.mean().item() == pytest.approx(0.0, abs=1e-4) and x.std().item() == pytest.approx(1.0, abs=1e-3)


def test_class_subset_relabels_and_caps_per_class():
    dm = MnistEmbedded(classes=[5, 6, 7, 8, 9], train_per_class=100)
    dm.setup()
    assert dm.num_classes == 5 and dm.class_names == ["5", "6", "7", "8", "9"]
    assert torch.bincount(dm.splits["train"].labels).tolist() == [100] * 5
    assert set(dm.splits["test"].labels.tolist()) == {0, 1, 2, 3, 4}


def test_resize_and_channels_for_timm_models():
    dm = MnistEmbedded(image_size=32, channels=3)
    assert dm.input_shape == (3, 32, 32)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"classes": [3, 11]}, "does not have"),
        ({"classes": []}, "empty"),
        ({"train_per_class": 10_000}, "fewer than the cap"),
        ({"augment": "mixup"}, "not one of"),
    ],
)
def test_bad_data_settings_fail_with_a_message(kwargs, message):
    with pytest.raises(LtrainError, match=message):
        MnistEmbedded(**kwargs).setup()


def test_missing_fashion_files_say_how_to_get_them(tmp_path):
    with pytest.raises(LtrainError, match="apt-get install dataset-fashion-mnist"):
        FashionMnistIdx(root=str(tmp_path)).prepare_data()


def test_truncated_idx_file_is_refused(tmp_path):
    import gzip

    from ltrain.data.idx import read_idx

    path = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\0" * 100)
    with pytest.raises(LtrainError, match="truncated"):
        read_idx(path)


@pytest.mark.fashion_mnist
def test_fashion_mnist_reads_the_debian_idx_files():
    dm = FashionMnistIdx(classes=[5, 6], val_fraction=0.1)
    dm.setup()
    assert len(dm.splits["test"]) == 2000  # 1,000 sandals + 1,000 shirts in the official test split
    assert len(dm.splits["train"]) + len(dm.splits["val"]) == 12000
    assert dm.class_names == ["Sandal", "Shirt"]
