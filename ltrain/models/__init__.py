"""Networks: the chapter's MLP, any timm model, their layer groups, initialisers and activations."""

from ltrain.models.activations import make_activation
from ltrain.models.factory import build_model, check_model_name
from ltrain.models.init import init_weights, variance_scaling_
from ltrain.models.mlp import build_mlp

__all__ = ["build_mlp", "build_model", "check_model_name", "init_weights", "make_activation", "variance_scaling_"]
