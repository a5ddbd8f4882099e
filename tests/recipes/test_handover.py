"""Hand-over through the zoo: the fine-tuning model gets exactly the pretrained encoder, frozen or not."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from ltrain.data.pairs import PairData
from ltrain.models import build_model
from ltrain.modules.encoders import encoder_of
from ltrain.modules.siamese import SiameseModule
from ltrain.zoo import Zoo
from tests.conftest import compose_config
from tests.tiny_runs import quiet_trainer

MLP = {"name": "mlp", "hidden": [32, 32], "activation": "elu", "init": "he_normal"}


def pretrain_and_push(pretext_digits, name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    network = build_model(MLP, 10, (1, 28, 28))
    encoder, dim = encoder_of(network)
    module = SiameseModule(encoder, dim, functools.partial(torch.optim.Adam, lr=1e-3))
    quiet_trainer(max_epochs=1, limit_val_batches=0).fit(
        module, datamodule=PairData(pretext_digits, pairs_per_epoch=640)
    )
    Zoo().push(network, name, model_cfg=MLP, num_classes=10, input_shape=(1, 28, 28), description="test")
    return network


def test_encoder_loaded_from_the_zoo_gives_outputs_identical_to_the_pretrained_one(pretext_digits):
    pretrained = pretrain_and_push(pretext_digits, "siamese_test")
    fresh = build_model(MLP, 10, (1, 28, 28))
    x = torch.stack([pretext_digits.splits["test"][i][0] for i in range(64)])
    assert not torch.allclose(encoder_of(fresh)[0](x), encoder_of(pretrained)[0](x))  # pretraining changed it
    # a 5-way task: the zoo loader keeps the new model's own (5-way) head
    loaded = build_model({**MLP, "pretrained": "zoo:siamese_test"}, 5, (1, 28, 28))
    assert loaded.head.out_features == 5
    with torch.no_grad():
        assert torch.equal(encoder_of(loaded.eval())[0](x), encoder_of(pretrained.eval())[0](x))


def test_a_frozen_fine_tuning_run_from_the_zoo_keeps_the_encoder_bit_identical(pretext_digits, tmp_path):
    from ltrain.train import train

    pretrained = pretrain_and_push(pretext_digits, "siamese_frozen_test")
    cfg = compose_config(
        "model.hidden=[32,32]",
        "model.pretrained=zoo:siamese_frozen_test",
        "data.train_per_class=100",
        "data.val_fraction=0.1",
        "data.test_fraction=0.1",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "plots=false",
    )
    with open_dict(cfg):
        cfg.freeze = OmegaConf.create(
            {"_target_": "ltrain.callbacks.FreezeSchedule", "phases": [{"trainable": "head"}]}
        )
    out = train(cfg, tmp_path)
    tuned = out.module.model
    for name, p in pretrained.named_parameters():
        if not name.startswith("head."):
            assert torch.equal(p, tuned.get_parameter(name)), name
    assert not torch.equal(pretrained.head.weight, tuned.head.weight)  # the head did train
    assert json.loads((tmp_path / "results.json").read_text())["test_acc"] > 0


@pytest.mark.slow  # three train() runs and a pretraining: ~25 s of CPU, minutes on a busy machine
def test_the_recipe_pushes_its_encoder_with_lineage_and_trains_every_arm(tmp_path):
    from ltrain.recipes import run_recipe

    cfg = compose_config(
        "recipe=siamese_mnist",
        "model.hidden=[32,32]",
        "recipe.pretrain.epochs=1",
        "recipe.pretrain.pairs_per_epoch=512",
        "recipe.pretrain.val_pairs=256",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "plots=false",
        "seed=3",
    )
    results = run_recipe(cfg, tmp_path)
    assert set(results["arms"]) == {
        "scratch",
        "siamese_frozen",
        "siamese_finetuned",
        "siamese_frozen_minus_scratch",
        "siamese_finetuned_minus_scratch",
    }
    assert results["handover_max_abs_diff"] == 0.0
    assert results["pretext"]["val_loss"] < results["pretext"]["val_loss_before"]
    entry = Zoo().get("siamese_mnist_s3")
    assert entry.architecture == "mlp" and entry.config["recipe"]["name"] == "siamese_mnist"
    assert entry.dataset["pretext"]["label_convention"] == "0 = same class, 1 = different class"
    assert "pretext_val_loss" in entry.metrics
    assert json.loads((tmp_path / "results.json").read_text())["zoo_entry"] == "siamese_mnist_s3"


def test_the_recipe_entry_is_named_by_zoo_push_and_a_taken_name_fails_before_any_work(pretext_digits, tmp_path):
    from ltrain.errors import LtrainError
    from ltrain.recipes import run_recipe
    from ltrain.recipes.pretraining import zoo_name

    assert zoo_name(compose_config("recipe=siamese_mnist", "seed=2")) == ("siamese_mnist_s2", False)
    assert zoo_name(compose_config("recipe=siamese_mnist", "zoo.push=mine")) == ("mine", False)
    pretrain_and_push(pretext_digits, "taken")
    with pytest.raises(LtrainError, match=r"zoo.overwrite"):
        run_recipe(compose_config("recipe=siamese_mnist", "zoo.push=taken"), tmp_path)
    assert not (tmp_path / "pretrain_logs").exists()
