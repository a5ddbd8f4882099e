"""Recipe ``siamese_mnist`` (and ``siamese_fashion``): siamese pretraining when labels are scarce.

The book's exercise. A classifier gets few labelled images (``data.train_per_class``, e.g. 100 per
class); the other images of the training set only serve to make cheap "same class or not?" pairs
(label 0 = same, 1 = different). Towers A and B (the classifier's own network minus its head: 5 hidden
layers x 100, He, ELU) are trained on the pairs, their outputs concatenated and fed to one logistic
output. Tower A's network (with its still untrained head) goes to the zoo; then three arms train on
the SAME labelled images and are tested on the same held-out images:

- ``scratch``: the classifier from random weights;
- ``siamese_frozen``: ``model.pretrained=zoo:NAME``, hidden layers frozen, only the new head trains;
- ``siamese_finetuned``: the same, then everything unfrozen at a lower rate (FreezeSchedule).

Disjointness: pairs are drawn from the images the labelled data module leaves out of its train, val and
test splits (``PairData(pool="unused")``), so no pretraining image is a labelled, validation or test
image of the classifier. Nothing is tuned on the test split (checkpoints are chosen on val accuracy).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from ltrain.data.pairs import PairData
from ltrain.modules.encoders import encoder_of
from ltrain.modules.siamese import SiameseModule
from ltrain.publish import check_push
from ltrain.recipes.pretraining import classifier_network, fit_pretext, hand_over_and_compare, zoo_name
from ltrain.train import build_datamodule


def build_siamese(cfg: DictConfig, dm) -> tuple[torch.nn.Module, SiameseModule]:
    """(tower A's classifier-shaped network, the siamese module over it)."""
    s, p = cfg.recipe.siamese, cfg.recipe.pretrain
    network = classifier_network(cfg, dm)
    encoder, dim = encoder_of(network)
    encoder_b = encoder_of(classifier_network(cfg, dm))[0] if s.towers == "separate" else None
    module = SiameseModule(
        encoder,
        dim,
        optimizer=functools.partial(torch.optim.Adam, lr=p.lr),
        encoder_b=encoder_b,
        combine=s.combine,
        loss=s.loss,
        margin=s.margin,
        head_hidden=s.head_hidden,
    )
    return network, module


def run(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Pretrain on pairs, push to the zoo, train the arms; returns {"arms": ..., "pretext": ..., ...}."""
    check_push(cfg, zoo_name(cfg)[0], by=f"recipe={cfg.recipe.name}")  # a taken name fails now, not after pretraining
    run_dir = Path(run_dir)
    p = cfg.recipe.pretrain
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = build_datamodule(cfg)
    pairs = PairData(
        dm,
        pool=p.pool,
        pairs_per_epoch=p.pairs_per_epoch,
        val_pairs=p.val_pairs,
        val_fraction=p.val_fraction,
        seed=cfg.seed,
        batch_size=p.batch_size,
    )
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    network, module = build_siamese(cfg, dm)
    pretext = fit_pretext(cfg, run_dir, module, pairs, p.epochs)
    description = (
        f"siamese ({cfg.recipe.siamese.towers} towers, {cfg.recipe.siamese.combine}) encoder from "
        f"{dm.name} pairs; head untrained"
    )
    return hand_over_and_compare(cfg, run_dir, network, dm, pairs, pretext, description) | {"pairs": pairs.describe()}
