"""imagenet_fashion_files shrunk: Fashion-MNIST written once as PNG files, served at lite0's 224 px, both arms run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ltrain.data import FashionMnistIdx
from ltrain.data.factory import build_datamodule
from ltrain.recipes import run_recipe
from ltrain.recipes.transfer_files import write_folder

FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_the_files_recipe_matches_imagenet_fashion_in_labels_split_and_arms(cfg_factory, tmp_path, monkeypatch):
    """The two tables sit side by side: same labels per class, split seed, epochs, test split and arm settings."""
    monkeypatch.setenv("LTRAIN_DATA", str(tmp_path))
    files, memory = cfg_factory("recipe=imagenet_fashion_files"), cfg_factory("recipe=imagenet_fashion")
    assert files.data.root == f"{tmp_path}/fashion_mnist_png" and files.data._target_ == "ltrain.data.ImageFolderData"
    for key in ("train_per_class", "val_fraction", "split_seed"):
        assert files.data[key] == memory.data[key], key
    # the official test split: all 10,000 in memory, a seeded balanced 2,000 of them from files (224 px costs)
    assert files.data.test_per_class == 200 and memory.data.test_fraction == 0.0
    assert files.trainer.max_epochs == memory.trainer.max_epochs
    assert files.model.channels_last and not memory.model.channels_last  # kernels only: the same network
    assert {**files.model, "channels_last": False} == memory.model
    for arm in ("frozen_trunk", "default_schedule"):
        assert files.recipe.arms[arm] == memory.recipe.arms[arm], arm


@pytest.mark.slow
@pytest.mark.skipif(
    not FASHION.is_dir(), reason="needs the Fashion-MNIST IDX files (apt-get install dataset-fashion-mnist)"
)
def test_imagenet_fashion_files_writes_the_folder_once_and_serves_224px_to_both_arms(
    cfg_factory, tmp_path, monkeypatch
):
    monkeypatch.setenv("LTRAIN_DATA", str(tmp_path / "data"))
    shrink = ["data.train_per_class=2", "data.val_fraction=0.0005", "data.test_per_class=2", "data.num_workers=0"]
    cfg = cfg_factory("recipe=imagenet_fashion_files", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
                      *shrink)  # fmt: skip
    results = run_recipe(cfg, tmp_path / "run")

    root = tmp_path / "data" / "fashion_mnist_png"
    assert results["folder"] == str(root) and set(results["arms"]) == {"frozen_trunk", "default_schedule"}
    assert len(list((root / "test").rglob("*.png"))) == 10_000  # the whole official test split, once
    assert write_folder(cfg) == (root, False)  # a second run (or sweep job) reuses it
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["fashion_mnist_png"]  # no temporary copy left
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(saved["arms"]) == {"frozen_trunk", "default_schedule"}
    for arm in saved["arms"]:
        run = json.loads((tmp_path / "run" / arm / "results.json").read_text())
        assert run["input_shape"] == [3, 224, 224]  # lite0's own size, from 28-px files
        assert run["preprocessing"]["mean"] == [0.5, 0.5, 0.5]  # lite0's mean, not the data's

    # the same labelled images as the in-memory imagenet_fashion: files are named by their source index
    files = build_datamodule(cfg)
    files.setup()
    memory = FashionMnistIdx(root=str(FASHION), train_per_class=2, val_fraction=0.0005)
    memory.setup()
    for split in ("train", "val"):
        indices = sorted(int(Path(p).stem) for p in files.splits[split].paths)
        assert indices == memory.split_indices[split].tolist(), split
    assert len(files.splits["test"]) == 20 and torch.bincount(files.splits["test"].labels).tolist() == [2] * 10
