"""Networks: the chapter's MLP, any timm model, their layer groups, initialisers and activations."""

from ltrain.models.activations import make_activation
from ltrain.models.factory import build_model, check_model_name
from ltrain.models.groups import LayerGroup, format_groups, layer_groups
from ltrain.models.init import init_weights, variance_scaling_
from ltrain.models.mlp import build_mlp

__all__ = [
    "LayerGroup",
    "build_mlp",
    "build_model",
    "check_model_name",
    "format_groups",
    "init_weights",
    "layer_groups",
    "make_activation",
    "variance_scaling_",
]
