"""Writing a dataset out as an image folder: folder names ImageFolder can read back in label order, written once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from ltrain.data import ImageFolderData, MnistEmbedded, ensure_image_folder, write_image_folder
from ltrain.data.base import Arrays
from ltrain.data.write import folder_names
from ltrain.errors import LtrainError


def _arrays(n: int = 60, classes: int = 3) -> Arrays:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=gen)
    y = torch.arange(n) % classes
    names = ["T-shirt/top", "Trouser", "Ankle boot"][:classes]
    return Arrays(x[: n // 2], y[: n // 2], x[n // 2 :], y[n // 2 :], class_names=names)


def test_folder_names_replace_separators_and_keep_the_label_order_when_sorted():
    assert folder_names(["T-shirt/top", "Ankle boot"]) == ["T-shirt_top", "Ankle_boot"]
    numbered = folder_names([f"c{i}" for i in range(12)], keep_label_order=True)
    assert numbered[:2] == ["00_c0", "01_c1"] and sorted(numbered) == numbered
    with pytest.raises(LtrainError, match="clashing folder names"):
        folder_names(["a/b", "a_b"])


def test_a_written_folder_read_back_keeps_the_sources_labels_and_classes(tmp_path):
    arrays = _arrays()
    root = write_image_folder(arrays, tmp_path / "out", format="png", keep_label_order=True)
    dm = ImageFolderData(str(root), model_name="mlp", image_size=8, channels=1, standardize=False, val_fraction=0.2)
    dm.setup()
    assert dm.class_names == ["0_T-shirt_top", "1_Trouser", "2_Ankle_boot"]  # not nested, not re-sorted
    test = dm.splits["test"]
    for path, label in zip(test.paths, test.labels.tolist(), strict=True):
        assert label == int(arrays.test_y[int(path[-9:-4])])


def test_ensure_image_folder_writes_once_even_when_racing(tmp_path):
    """Four writers start together: exactly one folder lands, complete; the others' copies are gone."""
    arrays = _arrays(n=400)
    root = tmp_path / "data" / "set"
    with ThreadPoolExecutor(4) as pool:
        wrote = list(pool.map(lambda _: ensure_image_folder(arrays, root, format="png", workers=1), range(4)))
    assert sum(wrote) == 1
    assert len(list(root.rglob("*.png"))) == 400
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["set"]  # no temporary folder left behind
    stamp = root.stat().st_mtime_ns
    assert ensure_image_folder(arrays, root, format="png") is False and root.stat().st_mtime_ns == stamp


def test_test_per_class_keeps_a_seeded_balanced_test_set_in_memory_and_from_files(tmp_path):
    dm = MnistEmbedded(test_per_class=5)
    dm.setup()
    assert torch.bincount(dm.splits["test"].labels).tolist() == [5] * 10
    again = MnistEmbedded(test_per_class=5)
    again.setup()
    assert torch.equal(dm.splits["test"].images, again.splits["test"].images)
    root = write_image_folder(_arrays(), tmp_path / "out", format="png")
    files = ImageFolderData(str(root), model_name="mlp", image_size=8, standardize=False, test_per_class=4)
    files.setup()
    assert torch.bincount(files.splits["test"].labels).tolist() == [4, 4, 4]
    too_many = ImageFolderData(str(root), model_name="mlp", image_size=8, standardize=False, test_per_class=11)
    with pytest.raises(LtrainError, match=r"data\.test_per_class=11, but class 0 has only 10 test examples"):
        too_many.setup()
