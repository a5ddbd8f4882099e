"""What the pretraining recipes share: pretrain an encoder, push it to the zoo, fine-tune arms from it.

The hand-over goes through the zoo, exactly as a user's own fine-tuning run would: the pretrained
encoder lives inside a full classifier-shaped network (same architecture as the classifier, head freshly
initialised and untouched by pretraining), that network is pushed as a zoo entry with its lineage
(pretext task, data, config, pretext metrics), and every pretrained arm is a plain ``train`` run with
``model.pretrained=zoo:NAME`` and the arm's ``freeze`` schedule (FreezeSchedule). The zoo loader keeps
the fine-tuning model's own head when the number of classes differs.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from ltrain.data.base import ImageClassificationData
from ltrain.models.factory import build_model
from ltrain.modules.encoders import encoder_of
from ltrain.publish import recipe_entry_name
from ltrain.store import bool_option
from ltrain.train import train
from ltrain.zoo import Zoo


def classifier_network(cfg: DictConfig, dm: ImageClassificationData) -> nn.Module:
    """A fresh network of ``cfg.model`` (never its pretrained weights) sized for the labelled data."""
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg["pretrained"] = None
    return build_model(model_cfg, dm.num_classes, dm.input_shape)


def pretrain_trainer(cfg: DictConfig, run_dir: Path, epochs: int) -> L.Trainer:
    """The run's Trainer settings (device, precision, batch limits) for ``epochs`` of pretraining."""
    return instantiate(
        cfg.trainer,
        max_epochs=epochs,
        callbacks=[],
        enable_checkpointing=False,
        logger=CSVLogger(save_dir=str(run_dir), name="", version="pretrain_logs"),
        default_root_dir=str(run_dir),
    )


def fit_pretext(
    cfg: DictConfig, run_dir: Path, module: L.LightningModule, datamodule: L.LightningDataModule, epochs: int
) -> dict[str, float]:
    """Fit the pretext module; its validation loss before and after (the pretext loss must fall)."""
    trainer = pretrain_trainer(cfg, run_dir, epochs)
    (before,) = trainer.validate(module, datamodule=datamodule, verbose=False)
    trainer.fit(module, datamodule=datamodule)
    (after,) = trainer.validate(module, datamodule=datamodule, verbose=False)
    out = {
        "val_loss_before": before["val/loss"],
        "val_loss": after["val/loss"],
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
    }
    if "val/acc" in after:
        out["val_acc_before"], out["val_acc"] = before["val/acc"], after["val/acc"]
    return out


def zoo_name(cfg: DictConfig) -> tuple[str, bool]:
    """(entry name, overwrite): ``zoo.push`` if given, else ``<recipe name>_s<seed>`` (``_2``, ``_3``… when an
    earlier run of the recipe holds it); replaced only if ``zoo.overwrite=true``."""
    zoo_cfg = cfg.get("zoo") or {}
    overwrite = bool_option(zoo_cfg.get("overwrite", False), "zoo.overwrite")
    return recipe_entry_name(cfg, f"{cfg.recipe.name}_s{cfg.seed}"), overwrite


def push_pretrained(
    cfg: DictConfig,
    model: nn.Module,
    dm: ImageClassificationData,
    pretext_data: Any,
    pretext: dict[str, float],
    description: str,
) -> str:
    """Push the classifier-shaped network holding the pretrained encoder; returns the entry name."""

    name, overwrite = zoo_name(cfg)
    metrics = {f"pretext_{k}": v for k, v in pretext.items() if k.startswith("val_")}
    Zoo().push(
        model,
        name,
        model_cfg=dict(OmegaConf.to_container(cfg.model, resolve=True).items()),
        num_classes=dm.num_classes,
        input_shape=dm.input_shape,
        dataset={"pretext": pretext_data.describe(), "classifier_data": dm.describe()},
        metrics=metrics,
        seeds=[int(cfg.seed)],
        config=OmegaConf.to_container(cfg, resolve=True),
        description=description,
        overwrite=overwrite,
    )
    return name


@torch.no_grad()
def handover_difference(
    pretrained: nn.Module, name: str, cfg: DictConfig, dm: ImageClassificationData, n: int = 256
) -> float:
    """Max |difference| of the encoder outputs of ``pretrained`` and of a fresh model loaded from ``zoo:name``
    (the fine-tuning model as ``train`` builds it), on the first ``n`` validation images. 0.0 is a clean hand-over."""
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg["pretrained"] = f"zoo:{name}"
    loaded = build_model(model_cfg, dm.num_classes, dm.input_shape)
    x = torch.stack([dm.splits["val"][i][0] for i in range(min(n, len(dm.splits["val"])))])
    a, _ = encoder_of(pretrained.eval())
    b, _ = encoder_of(loaded.eval())
    return float((a(x) - b(x)).abs().max())


def arm_config(cfg: DictConfig, arm: DictConfig, name: str | None) -> DictConfig:
    """The ``train`` config of one arm: the recipe's config with the arm's weights and freeze schedule."""
    arm_cfg = copy.deepcopy(cfg)
    with open_dict(arm_cfg):
        arm_cfg.recipe = None
        arm_cfg.model.pretrained = f"zoo:{name}" if arm.get("pretrained") else None
        arm_cfg.freeze = arm.get("freeze")
        if arm_cfg.get("zoo") is not None:
            arm_cfg.zoo.push = None
    return arm_cfg


def run_arms(cfg: DictConfig, run_dir: Path, name: str | None) -> dict[str, dict[str, float]]:
    """Train every arm of ``cfg.recipe.arms`` on the same labelled data; test accuracy per arm and gains over scratch."""

    arms: dict[str, dict[str, float]] = {}
    for arm_name, arm in cfg.recipe.arms.items():
        res = train(arm_config(cfg, arm, name), run_dir / arm_name)
        arms[arm_name] = {
            "test_acc": float(res.results["test_acc"]),
            "best_val_acc": float(res.results["best_val_acc"]),
        }
    base = arms.get("scratch")
    if base is not None:
        for arm_name in list(arms):
            if arm_name != "scratch" and not arm_name.endswith("_minus_scratch"):
                arms[f"{arm_name}_minus_scratch"] = {"test_acc": arms[arm_name]["test_acc"] - base["test_acc"]}
    return arms


def hand_over_and_compare(
    cfg: DictConfig,
    run_dir: Path,
    network: nn.Module,
    dm: ImageClassificationData,
    pretext_data: Any,
    pretext: dict[str, Any],
    description: str,
) -> dict[str, Any]:
    """The second half of every pretraining recipe: push the pretrained network to the zoo, prove the
    hand-over, train the arms from the entry; the recipe's results (the caller adds its data's description)."""
    name = push_pretrained(cfg, network, dm, pretext_data, pretext, description=description)
    diff = handover_difference(network, name, cfg, dm)
    arms = run_arms(cfg, run_dir, name)
    return {
        "recipe": cfg.recipe.name,
        "arms": arms,
        "pretext": pretext,
        "zoo_entry": name,
        "handover_max_abs_diff": diff,
    }
