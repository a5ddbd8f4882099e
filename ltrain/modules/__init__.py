"""LightningModules: the classifier, and the pretraining modules (siamese, autoencoders, contrastive)."""

from ltrain.modules.autoencoder import DenoisingAutoencoder, conv_autoencoder, dense_decoder, fit_greedy_layerwise
from ltrain.modules.classifier import ClassifierModule
from ltrain.modules.contrastive import ContrastiveAugment, SimCLRModule, nt_xent
from ltrain.modules.corruption import CorruptionDiscriminationModule
from ltrain.modules.encoders import encoder_of
from ltrain.modules.mixup import BatchMixup, soft_target_cross_entropy
from ltrain.modules.siamese import SiameseModule

__all__ = [
    "BatchMixup",
    "ClassifierModule",
    "ContrastiveAugment",
    "CorruptionDiscriminationModule",
    "DenoisingAutoencoder",
    "SiameseModule",
    "SimCLRModule",
    "conv_autoencoder",
    "dense_decoder",
    "encoder_of",
    "fit_greedy_layerwise",
    "nt_xent",
    "soft_target_cross_entropy",
]
