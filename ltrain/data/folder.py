"""The user's own images, streamed: a class-folder tree (torchvision's ImageFolder layout) or a CSV of path,label.

Only the file list and labels are held in memory; each image is decoded at full resolution in a DataLoader
worker every time it is served, then given timm's transform at the size it is served at (never stored
smaller). For a timm model the transform is the model's own (``preprocess=model``: its input size,
mean/std, interpolation and crop_pct from timm's pretrained config); an MLP, or ``preprocess=dataset``, gets
mean/std measured on (a sample of) the train split.

    ltrain data=image_folder data.root=~/photos model=timm model.name=resnet50 model.pretrained=timm
    ltrain data=image_list data.csv=~/photos/train.csv data.test_csv=~/photos/test.csv
"""

from __future__ import annotations

import hashlib
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from ltrain.data.base import ImageClassificationData
from ltrain.data.files import (
    BAD_FILES,
    CHECKS,
    FileList,
    check_files,
    decode_or_raise,
    file_stamp,
    read_image_list,
    scan_class_folders,
)
from ltrain.data.preprocess import INTERPOLATIONS, ImagePreprocess, model_preprocessing, zoo_preprocessing
from ltrain.data.subsets import select_classes
from ltrain.errors import LtrainError, close_matches
from ltrain.seeding import Stream, derive_seed

log = logging.getLogger(__name__)

PREPROCESS = ("model", "dataset")
STREAM_AUGMENTATIONS = ("none", "timm")


def example_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of example ``index``'s augmentation in ``epoch`` (the stream TensorImageDataset draws from)."""
    return derive_seed(Stream.AUGMENT, seed, epoch, int(index))


class ImageFileDataset(Dataset):
    """(image, label) pairs decoded from files on each access; paths are a numpy array (no per-item refcounts
    touched in workers, so their memory stays shared).

    A random transform draws from python's ``random``, numpy's and torch's global CPU generators (timm's
    augmentations use all three); for example ``i`` in epoch ``e`` they are seeded from (seed, e, i), so a
    resumed run sees the same augmentations. In the caller's process they are restored afterwards (its RNG is
    untouched); in a DataLoader worker, whose generators serve only this dataset, they are not (saving and
    restoring numpy's state alone costs ~0.15 ms an example, some 6% of a 224-px decode and augmentation).
    ``set_epoch`` is called by the EpochSeed callback (and by FrozenFeatureCache for its views).
    """

    def __init__(self, paths: list[Path], labels: torch.Tensor, transform: ImagePreprocess, seed: int = 0):
        self.paths = np.array([str(p) for p in paths])
        self.labels, self.transform = labels, transform
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, path: str | Path) -> Any:
        """The decoded PIL image of ``path`` in this dataset's mode (a BadImageError names a damaged file)."""
        return decode_or_raise(path, self.transform.mode)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.load(self.paths[i])
        if self.transform.deterministic:
            return self.transform(image), self.labels[i]
        seed = example_seed(self.seed, self.epoch, i)
        if get_worker_info() is not None:  # a loader worker's generators are its own: no one to restore them for
            _seed_generators(seed)
            return self.transform(image), self.labels[i]
        states = random.getstate(), np.random.get_state(), torch.random.default_generator.get_state()
        try:
            _seed_generators(seed)
            x = self.transform(image)
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.random.default_generator.set_state(states[2])
        return x, self.labels[i]


def _seed_generators(seed: int) -> None:
    """Seed python's, numpy's and torch's CPU generators. Not ``torch.manual_seed``: it also seeds every
    accelerator's generator (nothing here draws from them), and before CUDA starts it queues that seeding with
    a stack trace: ~0.25 ms an example, 10% of a 224-px decode and augmentation."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.random.default_generator.manual_seed(seed)


class StreamingImageData(ImageClassificationData):
    """Split, subset and cap a list of image files, served through timm's transforms; what a source provides
    is :meth:`list_files` (train files and, when it has one, an official test list).

    Args (besides ImageClassificationData's; ``classes`` may also name classes, e.g. ``[cat, dog]``):
        bad_files: ``error`` refuses an unreadable image naming it; ``skip`` leaves it out (logged, counted).
        check_files: ``header`` (open each file, fully decode a JPEG/PNG whose end marker is missing),
            ``decode`` (decode every file at setup) or ``none``: how unreadable files are found at setup.
        preprocess: ``model`` (what the weights expect: the recorded preprocessing of the zoo entry
            ``pretrained`` names, else timm's config of ``model_name``; an MLP not from the zoo falls back to
            ``dataset``) or ``dataset`` (mean/std of ``stats_samples`` train images; needs ``image_size``).
        model_name: the timm model whose preprocessing to use (the config passes ``${model.name}``).
        pretrained: where the model's weights come from (the config passes ``${model.pretrained}``): for
            ``zoo:NAME`` the entry's own input size, channels, mean/std, interpolation and crop_pct.
        image_size: the served side; None is the model's own input size.
        interpolation, crop_pct: override the model's (None keeps them).
        augment: ``none`` (train = eval transform: deterministic, cacheable) or ``timm`` (timm's train
            transform with ``scale``, ``ratio``, ``hflip``, ``color_jitter``, ``auto_augment``, ``re_prob``).
    """

    def __init__(
        self,
        bad_files: str = "error",
        check_files: str = "header",
        preprocess: str = "model",
        model_name: str | None = None,
        pretrained: str | None = None,
        interpolation: str | None = None,
        crop_pct: float | None = None,
        augment: str = "none",
        scale: tuple[float, float] | None = None,
        ratio: tuple[float, float] | None = None,
        hflip: float = 0.5,
        color_jitter: float = 0.4,
        auto_augment: str | None = None,
        re_prob: float = 0.0,
        stats_samples: int = 500,
        classes: list[int | str] | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        for key, value, choices in (
            ("bad_files", bad_files, BAD_FILES),
            ("check_files", check_files, CHECKS),
            ("preprocess", preprocess, PREPROCESS),
            ("augment", augment, STREAM_AUGMENTATIONS),
        ):
            if value not in choices:
                raise LtrainError(f"data.{key}={value!r} is not one of {list(choices)}")
        if interpolation is not None and interpolation not in INTERPOLATIONS:
            raise LtrainError(f"data.interpolation={interpolation!r} is not one of {list(INTERPOLATIONS)}")
        if self.channels not in (None, 1, 3):
            raise LtrainError(f"data.channels={self.channels} is not valid for image files: 1, 3 or null")
        self.bad_files, self.check_files = bad_files, check_files
        self.preprocess, self.model_name = preprocess, model_name
        self.pretrained = str(pretrained) if pretrained is not None else None
        self.interpolation, self.crop_pct = interpolation, crop_pct
        self.augment = augment
        self.augmentation = {
            "scale": tuple(scale) if scale is not None else None,
            "ratio": tuple(ratio) if ratio is not None else None,
            "hflip": float(hflip),
            "color_jitter": float(color_jitter),
            "auto_augment": auto_augment,
            "re_prob": float(re_prob),
        }
        self.stats_samples = stats_samples
        self.class_selection = list(classes) if classes is not None else None

    # --- what a source provides ----------------------------------------------------------------
    def list_files(self) -> tuple[FileList, FileList | None]:
        raise NotImplementedError

    # --- derived --------------------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, int, int]:
        self.setup()
        tf = self.splits["val"].transform
        return (tf.channels, tf.size, tf.size)

    def content_digest(self) -> str:
        """sha256 of every split's file paths, sizes, modification times and labels — not the pixels (a run
        would otherwise read the whole folder to compute it); a file rewritten in place changes its mtime."""
        if self._content is None:
            h = hashlib.sha256()
            for name in sorted(self.splits):
                ds = self.splits[name]
                h.update(f"{name}\n".encode())
                for path, label in zip(ds.paths, ds.labels.tolist(), strict=True):
                    h.update(f"{file_stamp(Path(path))}\t{label}\n".encode())
            self._content = h.hexdigest()
        return self._content

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        train_files, test_files = self.list_files()
        self.classes = self._class_ids(train_files.classes)
        train_files = self._selected(train_files, "the train files")
        self.class_names = [train_files.classes[c] for c in self.classes] if self.classes else train_files.classes
        labels = torch.tensor(train_files.labels, dtype=torch.long)
        paths = np.array(train_files.paths, dtype=object)
        if test_files is not None:
            test_files = self._selected(test_files, "the test files")
            train_idx, val_idx, _ = self.split_examples(labels, len(test_files.labels))
            test_paths, test_y = list(test_files.paths), torch.tensor(test_files.labels, dtype=torch.long)
        else:
            train_idx, val_idx, test_idx = self.split_examples(labels)
            test_paths, test_y = list(paths[test_idx.numpy()]), labels[test_idx]
        kept = self.test_subset(test_y).tolist()
        test_paths, test_y = [test_paths[i] for i in kept], test_y[kept]
        train_paths = list(paths[train_idx.numpy()])
        train_tf = self._transform(train_paths)
        eval_tf = train_tf.evaluation()
        self.splits = {
            "train": ImageFileDataset(train_paths, labels[train_idx], train_tf),
            "val": ImageFileDataset(list(paths[val_idx.numpy()]), labels[val_idx], eval_tf),
            "test": ImageFileDataset(test_paths, test_y, eval_tf),
        }

    def _class_ids(self, names: list[str]) -> list[int] | None:
        """``data.classes`` as indices into ``names`` (class names or indices)."""
        if self.class_selection is None:
            return None
        ids = []
        for c in self.class_selection:
            if isinstance(c, str) and not c.isdigit():
                if c not in names:
                    hint = close_matches(c, names)
                    raise LtrainError(
                        f"data.classes names {c!r}, which the data does not have; its classes are {names}"
                        + (f" (close: {', '.join(hint)})" if hint else "")
                    )
                ids.append(names.index(c))
            else:
                ids.append(int(c))
        return ids

    def _selected(self, files: FileList, where: str) -> FileList:
        """The files of the selected classes (relabelled 0..k-1), bad ones refused or skipped."""
        keep, labels = select_classes(torch.tensor(files.labels, dtype=torch.long), self.classes)
        chosen = FileList([files.paths[i] for i in keep.tolist()], labels.tolist(), files.classes)
        return check_files(chosen, self.bad_files, self.check_files, f"{where} of {self.name}")

    def _transform(self, train_paths: list[Path]) -> ImagePreprocess:
        """The train transform (its ``evaluation()`` is the eval transform)."""
        mode = "L" if self.channels == 1 else "RGB"
        if self.preprocess == "model" and self.model_name is None:
            raise LtrainError(
                "data.preprocess=model needs data.model_name (the config passes ${model.name}); "
                "or set data.preprocess=dataset"
            )
        entry = self.pretrained[len("zoo:") :] if (self.pretrained or "").startswith("zoo:") else None
        if self.preprocess == "model" and entry is not None:
            settings, channels = zoo_preprocessing(entry, self.image_size)
            if self.channels not in (None, channels):
                raise LtrainError(
                    f"data.channels={self.channels}, but zoo entry {entry!r} was trained on {channels}-channel "
                    f"inputs: leave data.channels unset (the entry's) or set data.preprocess=dataset"
                )
            mode = "L" if channels == 1 else "RGB"
        elif self.preprocess == "model" and self.model_name != "mlp":
            if mode == "L":
                raise LtrainError("data.channels=1 needs data.preprocess=dataset: the model's mean/std are for RGB")
            settings = model_preprocessing(str(self.model_name), self.image_size)
        else:
            if self.image_size is None:
                raise LtrainError(
                    "data.preprocess=dataset (or an MLP) needs data.image_size, the side images are served at, "
                    "e.g. data.image_size=64"
                )
            settings = {"size": self.image_size, "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "center"}
            c = 1 if mode == "L" else 3
            settings["mean"], settings["std"] = (0.0,) * c, (1.0,) * c
            if self.standardize:
                settings["mean"], settings["std"] = self._stats(train_paths, ImagePreprocess(**settings, mode=mode))
        if self.interpolation is not None:
            settings["interpolation"] = self.interpolation
        if self.crop_pct is not None:
            settings["crop_pct"] = float(self.crop_pct)
        return ImagePreprocess(**settings, mode=mode, training=self.augment == "timm", **self.augmentation)

    def _stats(self, paths: list[Path], unnormalised: ImagePreprocess) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean/std of up to ``stats_samples`` train images (a seeded choice) as they are served."""
        gen = torch.Generator().manual_seed(self.split_seed)
        chosen = torch.randperm(len(paths), generator=gen)[: self.stats_samples].tolist()
        x = torch.stack([unnormalised(decode_or_raise(paths[i], unnormalised.mode)) for i in chosen])
        x = x.transpose(0, 1).reshape(x.shape[1], -1)
        std = x.std(dim=1).clamp_min(1e-6)
        return tuple(round(v, 6) for v in x.mean(dim=1).tolist()), tuple(round(v, 6) for v in std.tolist())


class ImageFolderData(StreamingImageData):
    """Images under ``root/<class>/...`` (torchvision's ImageFolder layout), streamed from disk.

    If ``root`` has ``train/`` and ``test/`` sub-folders they are the official split; otherwise the test
    split is drawn with ``test_fraction``. Files whose extension is not an image's are left out (logged).
    """

    def __init__(self, root: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.root = Path(root).expanduser()

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"image_folder:{self.root}"

    def prepare_data(self) -> None:
        if not self.root.is_dir():
            raise LtrainError(f"data.root={self.root} is not a folder; point it at a folder of <class>/<image> files")

    def list_files(self) -> tuple[FileList, FileList | None]:
        self.prepare_data()
        if (self.root / "train").is_dir() and (self.root / "test").is_dir():
            train = scan_class_folders(self.root / "train")
            test = scan_class_folders(self.root / "test")
            if test.classes != train.classes:
                raise LtrainError(
                    f"{self.root / 'test'} has classes {test.classes}, but {self.root / 'train'} has {train.classes}"
                )
            return train, test
        return scan_class_folders(self.root), None


class ImageListData(StreamingImageData):
    """Images listed in a CSV of ``path,label`` rows (paths relative to the CSV), streamed from disk.

    ``test_csv`` is the official test split (its labels must be among the train list's); without it the
    test split is drawn with ``test_fraction``.
    """

    def __init__(self, csv: str, test_csv: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.csv = Path(csv).expanduser()
        self.test_csv = Path(test_csv).expanduser() if test_csv else None

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"image_list:{self.csv}"

    def list_files(self) -> tuple[FileList, FileList | None]:
        train = read_image_list(self.csv)
        test = read_image_list(self.test_csv, train.classes) if self.test_csv is not None else None
        return train, test
