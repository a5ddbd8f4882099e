"""Bad files in a streamed image folder or list: named, skipped when asked (counted), converted when only odd."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ltrain.data import BadImageError, ImageFolderData, ImageListData
from ltrain.data.files import load_rgb
from ltrain.errors import LtrainError
from tests.data.image_files import truncated_jpeg, write_folder


def _dm(root, **kwargs):
    kwargs = {"model_name": "mlp", "image_size": 16, "standardize": False, "num_workers": 0, **kwargs}
    return ImageFolderData(str(root), **kwargs)


def test_a_truncated_jpeg_is_refused_naming_the_file(tmp_path):
    root = write_folder(tmp_path / "photos")
    bad = truncated_jpeg(root / "dog" / "cut.jpg")
    with pytest.raises(BadImageError, match="cannot read the image") as err:
        _dm(root).setup()
    assert str(bad) in str(err.value) and "data.bad_files=skip" in str(err.value)


def test_a_non_image_with_an_image_extension_is_refused_naming_the_file(tmp_path):
    root = write_folder(tmp_path / "photos")
    bad = root / "cat" / "page.jpg"
    bad.write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(BadImageError, match=f"cannot read the image {bad} \\(UnidentifiedImageError"):
        _dm(root).setup()


def test_bad_files_skip_leaves_them_out_counted_and_named(tmp_path, caplog):
    root = write_folder(tmp_path / "photos")
    truncated_jpeg(root / "dog" / "cut.jpg")
    (root / "cat" / "page.png").write_bytes(b"not a png")
    with caplog.at_level(logging.WARNING, logger="ltrain.data.files"):
        dm = _dm(root, bad_files="skip")
        dm.setup()
    assert sum(len(s) for s in dm.splits.values()) == 20  # the 20 good images, none of the 2 bad
    assert "left out 2 unreadable image file(s)" in caplog.text
    assert "cut.jpg" in caplog.text and "page.png" in caplog.text


def test_a_text_file_in_a_class_folder_is_not_an_image_and_is_ignored(tmp_path, caplog):
    root = write_folder(tmp_path / "photos")
    (root / "cat" / "notes.txt").write_text("shot in 2019")
    with caplog.at_level(logging.INFO, logger="ltrain.data.files"):
        dm = _dm(root)
        dm.setup()
    assert sum(len(s) for s in dm.splits.values()) == 20
    assert "ignored 1 file(s) that are not images by extension: cat/notes.txt" in caplog.text


@pytest.mark.parametrize("mode", ["CMYK", "P", "P+transparency", "RGBA", "L", "LA", "I;16"])
def test_odd_colour_modes_decode_to_three_channels(tmp_path, mode):
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8))
    if mode == "I;16":
        image = Image.fromarray(np.full((20, 20), 30000, dtype=np.uint16))  # 16-bit grey: scaled, not clipped
        expected = np.full((20, 20, 3), 30000 // 256, dtype=np.uint8)
    elif mode == "P+transparency":
        image = rgb.convert("P")
        image.info["transparency"] = 0
        expected = np.asarray(image.convert("RGBA").convert("RGB"))
    else:
        image = rgb.convert(mode)
        expected = np.asarray(image.convert("RGB"))
    path = tmp_path / ("x.tif" if mode in ("CMYK", "I;16") else "x.png")
    image.save(path)
    decoded = load_rgb(path)
    assert decoded.mode == "RGB" and np.array_equal(np.asarray(decoded), expected)


def test_grey_and_cmyk_files_in_a_folder_are_served_as_rgb_tensors(tmp_path):
    root = write_folder(tmp_path / "photos")
    Image.new("L", (32, 32), 100).save(root / "cat" / "grey.png")
    Image.new("CMYK", (32, 32), (0, 0, 0, 0)).save(root / "dog" / "print.jpg")
    dm = _dm(root, model_name="resnet18", image_size=32)
    dm.setup()
    every = {p: s for s in dm.splits.values() for p in s.paths}
    for name in ("grey.png", "print.jpg"):
        path = next(p for p in every if p.endswith(name))
        ds = every[path]
        x, _ = ds[list(ds.paths).index(path)]
        assert x.shape == (3, 32, 32)
    grey = next(p for p in every if p.endswith("grey.png"))
    x = every[grey][list(every[grey].paths).index(grey)][0]
    expected = (torch.tensor(100 / 255) - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(x[:, 16, 16], expected, atol=1e-5, rtol=0)


def test_an_empty_class_folder_is_refused_naming_it(tmp_path):
    root = write_folder(tmp_path / "photos")
    (root / "emu").mkdir()
    (root / "emu" / "readme.txt").write_text("todo")
    with pytest.raises(LtrainError, match=f"the class folder {root / 'emu'} has no image files"):
        _dm(root).setup()


def test_a_single_class_folder_is_refused(tmp_path):
    root = write_folder(tmp_path / "photos", classes=("cat",))
    with pytest.raises(LtrainError, match=r"has 1 class .*a classifier needs at least 2"):
        _dm(root).setup()


def test_a_csv_naming_a_missing_file_or_a_bad_row_is_refused_naming_the_line(tmp_path):
    root = write_folder(tmp_path / "photos")
    csv = root / "train.csv"
    csv.write_text("path,label\ncat/000.jpg,cat\ndog/000.jpg,dog\ncat/gone.jpg,cat\n")
    with pytest.raises(LtrainError, match=f"{csv} line 4: the image {root / 'cat' / 'gone.jpg'} does not exist"):
        ImageListData(str(csv), model_name="mlp", image_size=16).setup()
    csv.write_text("cat/000.jpg,cat\ndog/000.jpg\n")
    with pytest.raises(LtrainError, match=f"{csv} line 2: expected 'path,label', got 'dog/000.jpg'"):
        ImageListData(str(csv), model_name="mlp", image_size=16).setup()
    test_csv = root / "test.csv"
    csv.write_text("".join(f"{c}/{i:03d}.jpg,{c}\n" for c in ("cat", "dog") for i in range(10)))
    test_csv.write_text("cat/000.jpg,cat\ndog/000.jpg,dgo\n")
    with pytest.raises(LtrainError, match=f"{test_csv} line 2: label 'dgo' is not one of the train list's classes"):
        ImageListData(str(csv), test_csv=str(test_csv), model_name="mlp", image_size=16).setup()


def test_a_file_that_fails_to_decode_in_a_worker_reaches_the_user_as_one_named_error(tmp_path):
    """A JPEG whose header and end marker are intact but whose data is not passes the cheap setup check; the
    worker's error comes back as a BadImageError naming the file, without the worker's traceback."""
    root = write_folder(tmp_path / "photos", per_class=4)
    good = (root / "cat" / "000.jpg").read_bytes()
    bad = root / "cat" / "zz_damaged.jpg"
    bad.write_bytes(good[:200] + b"\x00" * (len(good) - 202) + b"\xff\xd9")
    dm = _dm(root, val_fraction=0.25, test_fraction=0.25)
    dm.setup()
    split = next(s for s in dm.splits.values() if any(p.endswith("zz_damaged.jpg") for p in s.paths))
    with pytest.raises(BadImageError) as err:
        for _ in DataLoader(split, batch_size=2, num_workers=1):
            pass
    message = str(err.value)
    assert message.startswith(f"cannot read the image {bad}") and "Traceback" not in message
    assert "data.check_files=decode" in message
    with pytest.raises(BadImageError, match=r"zz_damaged\.jpg"):  # check_files=decode finds it at setup
        _dm(root, val_fraction=0.25, test_fraction=0.25, check_files="decode").setup()
