"""Streamed image folders and lists: the model's own timm preprocessing at full resolution, exact splits/resume."""

from __future__ import annotations

import random

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_model_data_config
from torch.utils.data import DataLoader

from ltrain.data import ImageFolderData, ImageListData
from ltrain.errors import LtrainError
from tests.data.image_files import write_folder


def test_a_folder_of_256px_jpegs_is_served_at_224_exactly_as_timms_own_transform(tmp_path):
    """The acceptance case: full-resolution decodes, timm's eval transform of the model, 224 px, no upsampling."""
    root = write_folder(tmp_path / "photos", ("a", "b"), per_class=6, size=256)
    dm = ImageFolderData(str(root), model_name="resnet18", augment="timm", num_workers=0)
    dm.setup()
    assert dm.input_shape == (3, 224, 224)
    config = resolve_model_data_config(timm.create_model("resnet18"))
    reference = create_transform(**config, is_training=False)
    for split in ("val", "test"):
        ds = dm.splits[split]
        for i in range(len(ds)):
            x, _ = ds[i]
            assert x.shape == (3, 224, 224)
            assert torch.equal(x, reference(Image.open(ds.paths[i]).convert("RGB")))
    train = dm.splits["train"]
    assert all(train[i][0].shape == (3, 224, 224) for i in range(len(train)))
    assert not hasattr(train, "images")  # only paths and labels are held
    assert dm.describe()["transform"].startswith("ImagePreprocess(size=224, mean=(0.485, 0.456, 0.406)")


def test_image_size_replaces_the_models_input_size_and_keeps_its_mean_and_interpolation(tmp_path):
    root = write_folder(tmp_path / "photos", per_class=10, size=48)
    dm = ImageFolderData(str(root), model_name="tf_efficientnet_lite0", image_size=40, num_workers=0)
    dm.setup()
    tf = dm.splits["val"].transform
    assert (tf.size, tf.mean, tf.interpolation, tf.crop_pct) == (40, (0.5, 0.5, 0.5), "bicubic", 0.875)
    assert dm.input_shape == (3, 40, 40)


def test_train_augmentation_depends_only_on_seed_epoch_and_index_and_leaves_global_rngs_alone(tmp_path):
    root = write_folder(tmp_path / "photos", per_class=10, size=40)
    dm = ImageFolderData(
        str(root), model_name="resnet18", image_size=32, augment="timm", auto_augment="rand-m9-mstd0.5", re_prob=0.5
    )
    dm.setup()
    train = dm.splits["train"]
    train.seed = 5
    states = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    first = train[3][0]
    assert random.getstate() == states[0] and np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])
    random.random(), np.random.rand(), torch.rand(3)  # other draws in between change nothing
    assert torch.equal(train[3][0], first)
    train.set_epoch(1)
    assert not torch.equal(train[3][0], first)
    train.set_epoch(0)
    assert torch.equal(train[3][0], first)


def test_worker_processes_serve_the_same_batches_as_the_main_process(tmp_path):
    root = write_folder(tmp_path / "photos", per_class=6, size=40)
    dm = ImageFolderData(
        str(root),
        model_name="resnet18",
        image_size=32,
        augment="timm",
        re_prob=0.5,
        auto_augment="rand-m9-mstd0.5",
    )
    dm.setup()
    train = dm.splits["train"]
    train.seed, train.epoch = 3, 2
    main = [x for x, _ in DataLoader(train, batch_size=4, num_workers=0)]
    workers = [x for x, _ in DataLoader(train, batch_size=4, num_workers=2)]
    for a, b in zip(main, workers, strict=True):
        assert torch.equal(a, b)


def test_classes_by_name_caps_and_the_seeded_split_are_kept(tmp_path):
    root = write_folder(tmp_path / "photos", ("ant", "bee", "cat"), per_class=20, size=24)
    dm = ImageFolderData(str(root), model_name="mlp", image_size=16, classes=["cat", "ant"], train_per_class=5)
    dm.setup()
    assert dm.class_names == ["cat", "ant"] and dm.num_classes == 2
    assert torch.bincount(dm.splits["train"].labels).tolist() == [5, 5]
    assert torch.bincount(dm.splits["val"].labels).tolist() == [2, 2]  # 10% of 20 per class
    assert all(
        "/cat/" in p for p, y in zip(dm.splits["test"].paths, dm.splits["test"].labels.tolist(), strict=True) if y == 0
    )
    again = ImageFolderData(str(root), model_name="mlp", image_size=16, classes=[2, 0], train_per_class=5)
    again.setup()
    for split in ("train", "val", "test"):
        assert list(again.splits[split].paths) == list(dm.splits[split].paths)
    with pytest.raises(LtrainError, match=r"data.classes names 'cot'.*close: cat"):
        ImageFolderData(str(root), model_name="mlp", image_size=16, classes=["cot", "ant"]).setup()


def test_train_and_test_subfolders_are_the_official_split(tmp_path):
    write_folder(tmp_path / "photos" / "train", per_class=10, size=24)
    write_folder(tmp_path / "photos" / "test", per_class=3, size=24, seed=1)
    dm = ImageFolderData(str(tmp_path / "photos"), model_name="mlp", image_size=16)
    dm.setup()
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 18, "val": 2, "test": 6}
    assert all("/test/" in p for p in dm.splits["test"].paths)


def test_a_csv_list_serves_the_same_examples_as_the_folder(tmp_path):
    root = write_folder(tmp_path / "photos", per_class=8, size=24)
    rows = ["path,label"] + [f"{p.relative_to(root)},{p.parent.name}" for p in sorted(root.rglob("*.jpg"))]
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    folder = ImageFolderData(str(root), model_name="resnet18", image_size=32)
    listed = ImageListData(str(root / "train.csv"), model_name="resnet18", image_size=32)
    folder.setup(), listed.setup()
    assert listed.class_names == folder.class_names == ["cat", "dog"]
    for split in ("train", "val", "test"):
        assert list(listed.splits[split].paths) == list(folder.splits[split].paths)
        assert torch.equal(listed.splits[split][0][0], folder.splits[split][0][0])


def test_the_content_digest_follows_file_sizes_and_mtimes_without_reading_pixels(tmp_path):
    import os

    root = write_folder(tmp_path / "photos", per_class=10, size=24)
    dm = ImageFolderData(str(root), model_name="mlp", image_size=16)
    before = dm.describe()["content"]
    assert ImageFolderData(str(root), model_name="mlp", image_size=16).describe()["content"] == before
    touched = root / "cat" / "000.jpg"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 1_000_000_000))
    assert ImageFolderData(str(root), model_name="mlp", image_size=16).describe()["content"] != before


def test_an_mlp_gets_train_statistics_at_the_served_size(tmp_path):
    root = write_folder(tmp_path / "photos", per_class=10, size=24)
    dm = ImageFolderData(str(root), model_name="mlp", image_size=16, channels=1)
    dm.setup()
    x = torch.stack([dm.splits["train"][i][0] for i in range(len(dm.splits["train"]))])
    assert dm.input_shape == (1, 16, 16) and x.shape[1:] == (1, 16, 16)
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-2  # every train image is in the sample
    with pytest.raises(LtrainError, match=r"needs data\.image_size"):
        ImageFolderData(str(root), model_name="mlp").setup()


def test_a_timm_model_trains_on_a_streamed_folder_through_ltrain_train(tmp_path, cfg_factory):
    from ltrain.train import train

    root = write_folder(tmp_path / "photos", per_class=8, size=48)
    cfg = cfg_factory(
        "model=timm", "model.name=resnet18", "data=image_folder", f"data.root={root}", "data.image_size=32",
        "data.num_workers=0", "trainer.max_epochs=1", "data.augment=timm",
    )  # fmt: skip
    run = train(cfg, tmp_path / "run")
    assert run.results["input_shape"] == [3, 32, 32]
    assert run.results["preprocessing"] == {
        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "interpolation": "bicubic", "crop_pct": 0.95,
    }  # fmt: skip
    assert 0.0 <= run.results["test_acc"] <= 1.0

    from ltrain.config import compose_config
    from ltrain.inference.predict import predict

    images = tmp_path / "new_photos"
    images.mkdir()
    Image.open(root / "cat" / "000.jpg").save(images / "a.jpg")
    for extra in ([f"images={images}"], ["split=test", "data=image_folder", f"data.root={root}"]):
        cfg = compose_config(f"source={tmp_path / 'run'}", "mc.samples=0", *extra, config_name="predict")
        report = predict(cfg, tmp_path / "predicted")
        assert report["inputs"] == (1 if extra[0].startswith("images") else len(run.datamodule.splits["test"]))


def test_write_image_folder_round_trips_through_the_streamed_folder(tmp_path):
    from ltrain.data import write_image_folder
    from ltrain.data.base import Arrays

    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (24, 1, 12, 12), dtype=torch.uint8, generator=gen)
    y = torch.arange(24) % 2
    arrays = Arrays(x[:16], y[:16], x[16:], y[16:], class_names=["shirt", "sandal"])
    root = write_image_folder(arrays, tmp_path / "out", format="png")
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))[:2] == [
        "test/sandal/00001.png", "test/sandal/00003.png",
    ]  # fmt: skip
    dm = ImageFolderData(str(root), model_name="mlp", image_size=12, channels=1, standardize=False, val_fraction=0.25)
    dm.setup()
    assert dm.class_names == ["sandal", "shirt"] and len(dm.splits["test"]) == 8
    for path, label in zip(dm.splits["test"].paths, dm.splits["test"].labels.tolist(), strict=True):
        i = 16 + int(path[-9:-4])
        served = dm.splits["test"][list(dm.splits["test"].paths).index(path)][0]
        assert torch.equal((served * 255).round().to(torch.uint8), x[i])  # PNG is lossless
        assert dm.class_names[label] == arrays.class_names[int(y[i])]
    big = write_image_folder((x[:4], y[:4]), tmp_path / "big", size=64)
    assert Image.open(next(big.rglob("*.jpg"))).size == (64, 64)


@pytest.mark.parametrize("group", ["image_folder", "image_list"])
def test_each_streamed_data_config_composes_and_takes_the_models_own_size(tmp_path, cfg_factory, group):
    from ltrain.data.factory import build_datamodule

    root = write_folder(tmp_path / "photos", per_class=10, size=24)
    (root / "all.csv").write_text("".join(f"{p.relative_to(root)},{p.parent.name}\n" for p in root.rglob("*.jpg")))
    where = f"data.root={root}" if group == "image_folder" else f"data.csv={root / 'all.csv'}"
    dm = build_datamodule(cfg_factory("model=timm", "model.name=tf_efficientnet_lite0", f"data={group}", where))
    assert dm.input_shape == (3, 224, 224) and dm.splits["val"].transform.mean == (0.5, 0.5, 0.5)
    assert sum(len(s) for s in dm.splits.values()) == 20


def _push_entry(name: str, input_shape: tuple[int, int, int], preprocessing: dict | None) -> None:
    from ltrain.models import build_model
    from ltrain.zoo import Zoo

    model = build_model({"name": "test_resnet"}, 2, input_shape)
    cfg = {"name": "test_resnet", "kwargs": {}}
    Zoo().push(model, name, model_cfg=cfg, input_shape=input_shape, preprocessing=preprocessing)


def test_weights_from_a_zoo_entry_get_the_inputs_that_entry_was_trained_on(tmp_path, cfg_factory):
    """Not timm's ImageNet config of the architecture: the entry's side, channels, mean/std and resize."""
    from ltrain.train import train

    root = write_folder(tmp_path / "photos", per_class=8, size=64)
    recorded = {"mean": [0.13], "std": [0.31], "interpolation": "bilinear", "crop_pct": 1.0}
    _push_entry("grey_digits", (1, 32, 32), recorded)
    dm = ImageFolderData(str(root), model_name="test_resnet", pretrained="zoo:grey_digits", num_workers=0)
    dm.setup()
    assert dm.input_shape == (1, 32, 32)
    reference = create_transform((1, 32, 32), mean=(0.13,), std=(0.31,), interpolation="bilinear", crop_pct=1.0)
    for split in ("train", "val"):
        x, _ = dm.splits[split][0]
        assert torch.equal(x, reference(Image.open(dm.splits[split].paths[0]).convert("L")))
    timms = ImageFolderData(str(root), model_name="test_resnet", num_workers=0)  # other weights: timm's config
    timms.setup()
    assert timms.input_shape[0] == 3 and timms.splits["val"].transform.mean != (0.13,)

    cfg = cfg_factory(
        "model=timm", "model.name=test_resnet", "model.pretrained=zoo:grey_digits", "data=image_folder",
        f"data.root={root}", "data.num_workers=0", "trainer.max_epochs=1",
    )  # fmt: skip
    run = train(cfg, tmp_path / "run")
    assert run.results["input_shape"] == [1, 32, 32] and run.results["preprocessing"] == recorded
    from ltrain.runs import from_run

    _, rebuilt, _ = from_run(tmp_path / "run")  # the trained weights, and still the entry's inputs
    assert rebuilt.input_shape == (1, 32, 32) and rebuilt.splits["val"].transform.mean == (0.13,)
    from ltrain.config import compose_config
    from ltrain.inference.predict import predict

    overrides = (f"source={tmp_path / 'run'}", "mc.samples=0", "split=test", "data=image_folder", f"data.root={root}")
    report = predict(compose_config(*overrides, config_name="predict"), tmp_path / "predicted")
    assert report["inputs"] == len(run.datamodule.splits["test"])  # served grey at 32 px, as trained


def test_a_zoo_entry_that_cannot_say_its_preprocessing_is_refused_before_training(tmp_path):
    root = write_folder(tmp_path / "photos", per_class=6, size=32)
    _push_entry("unknown_inputs", (3, 32, 32), None)
    with pytest.raises(LtrainError, match=r"does not record the mean/std .* data\.preprocess=dataset"):
        ImageFolderData(str(root), model_name="test_resnet", pretrained="zoo:unknown_inputs").setup()
    _push_entry("grey", (1, 32, 32), {"mean": [0.5], "std": [0.25]})
    with pytest.raises(LtrainError, match=r"data\.channels=3, but zoo entry 'grey' was trained on 1-channel"):
        ImageFolderData(str(root), model_name="test_resnet", pretrained="zoo:grey", channels=3).setup()
    with pytest.raises(LtrainError, match="no_such_entry"):
        ImageFolderData(str(root), model_name="test_resnet", pretrained="zoo:no_such_entry").setup()
