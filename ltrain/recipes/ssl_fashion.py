"""Recipe ``ssl_fashion``: unsupervised pretraining (a denoising autoencoder) when labels are scarce.

The chapter's unsupervised-pretraining recipe: with many unlabelled and few labelled images, train an
autoencoder on all the images (labels unused), reuse its encoder — the classifier's own hidden
layers — under a new output layer, and fine-tune on the labelled few. Here: the Fashion-MNIST
training images except the classifier's validation images (``pool="all"``; test images are never
seen), 100 labels per class for the classifier. The autoencoder trains all layers at once (today's
way) or greedily, one layer at a time (``recipe.autoencoder.greedy=true``, the historical way).
Arms, on the same labelled images: ``scratch``, ``autoencoder_frozen``, ``autoencoder_finetuned``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from ltrain.data.pairs import UnlabelledData
from ltrain.modules.autoencoder import DenoisingAutoencoder, dense_decoder, fit_greedy_layerwise
from ltrain.modules.encoders import encoder_of
from ltrain.publish import check_push
from ltrain.recipes.pretraining import (
    classifier_network,
    fit_pretext,
    hand_over_and_compare,
    pretrain_trainer,
    zoo_name,
)
from ltrain.train import build_datamodule


def run(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Pretrain the autoencoder, push its encoder to the zoo, train the arms."""
    check_push(cfg, zoo_name(cfg)[0], by=f"recipe={cfg.recipe.name}")  # a taken name fails now, not after pretraining
    run_dir = Path(run_dir)
    p, a = cfg.recipe.pretrain, cfg.recipe.autoencoder
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = build_datamodule(cfg)
    unlabelled = UnlabelledData(dm, pool=p.pool, val_fraction=p.val_fraction, seed=cfg.seed, batch_size=p.batch_size)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    network = classifier_network(cfg, dm)
    optimizer = functools.partial(torch.optim.Adam, lr=p.lr)
    if a.greedy:
        stages = fit_greedy_layerwise(
            network,
            unlabelled,
            lambda k: pretrain_trainer(cfg, run_dir / f"greedy{k}", p.epochs),
            optimizer,
            noise=a.noise,
            noise_level=a.noise_level,
        )
        pretext = {"val_loss": stages[-1].get("val/loss", float("nan")), "stages": len(stages)}
    else:
        encoder, dim = encoder_of(network)
        widths = list(cfg.model.hidden)
        module = DenoisingAutoencoder(
            encoder,
            dense_decoder(dim, widths[-2::-1], dm.input_shape),
            optimizer,
            noise=a.noise,
            noise_level=a.noise_level,
        )
        pretext = fit_pretext(cfg, run_dir, module, unlabelled, p.epochs)
    description = (
        f"denoising autoencoder ({'greedy' if a.greedy else 'joint'}, {a.noise} {a.noise_level}) "
        f"encoder from unlabelled {dm.name}; head untrained"
    )
    results = hand_over_and_compare(cfg, run_dir, network, dm, unlabelled, pretext, description)
    return results | {"unlabelled": unlabelled.describe()}
