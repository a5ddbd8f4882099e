"""LightningModules: the classifier, and the pretraining modules (siamese, autoencoders, contrastive)."""

from ltrain.modules.classifier import ClassifierModule

__all__ = ["ClassifierModule"]
