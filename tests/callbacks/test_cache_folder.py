"""FrozenFeatureCache over a streamed image folder: the same weights as uncached, random timm transforms refused."""

from __future__ import annotations

import copy

import pytest
import timm
import torch

from ltrain.callbacks import FreezeSchedule, FrozenFeatureCache
from ltrain.callbacks.epoch_seed import EpochSeed
from ltrain.data import ImageFolderData
from ltrain.errors import LtrainError
from ltrain.modules.classifier import ClassifierModule
from tests.data.image_files import write_folder
from tests.tiny_runs import quiet_trainer


def _folder_dm(root, **kwargs) -> ImageFolderData:
    kwargs = {"model_name": "test_resnet", "image_size": 32, "batch_size": 8, "num_workers": 0, **kwargs}
    dm = ImageFolderData(str(root), **kwargs)
    dm.setup()
    return dm


def _fit(model, dm, callbacks, epochs=2):
    model = copy.deepcopy(model)
    torch.manual_seed(0)
    module = ClassifierModule(model, 2, optimizer=lambda ps: torch.optim.Adam(ps, lr=1e-2))
    trainer = quiet_trainer(
        max_epochs=epochs,
        num_sanity_val_steps=0,
        callbacks=[EpochSeed(0), *callbacks],
    )
    trainer.fit(module, datamodule=dm)
    return model, trainer


def test_a_cached_trunk_on_a_streamed_folder_ends_equal_to_uncached(tmp_path):
    dm = _folder_dm(write_folder(tmp_path / "photos", per_class=12, size=40))
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=2)
    plain, _ = _fit(model, dm, [FreezeSchedule([{"trainable": "head"}])])
    cache = FrozenFeatureCache()
    cached, _ = _fit(model, dm, [FreezeSchedule([{"trainable": "head"}]), cache])
    assert cache.sources == {"train": "computed", "val": "computed"}
    torch.testing.assert_close(cached.get_classifier().weight, plain.get_classifier().weight, rtol=0, atol=1e-5)
    assert not torch.equal(cached.get_classifier().weight, model.get_classifier().weight)


def test_timms_random_train_transform_with_a_cache_is_refused_by_name(tmp_path):
    dm = _folder_dm(write_folder(tmp_path / "photos", per_class=10, size=40), augment="timm")
    model = timm.create_model("test_resnet", num_classes=2)
    with pytest.raises(LtrainError, match=r"train transform ImagePreprocess\(.*training=True.*is random"):
        _fit(model, dm, [FreezeSchedule([{"trainable": "head"}]), FrozenFeatureCache()], epochs=1)
