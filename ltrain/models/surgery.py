"""Head surgery for transfer learning: a new output layer, fewer reused groups, extra dense layers.

The book's advice when a reused model does not fit the new task: replace the output layer; the more the
tasks differ, the fewer layers to reuse (drop the top ones); if still poor, add layers. timm gives the
first for its models (``reset_classifier``); this adds the same for plain modules and the other two, in
terms of :func:`ltrain.models.layer_groups` so that "drop the top 2 groups" means the same everywhere.
Dropped groups become ``nn.Identity`` (the lower layers keep their names, so their weights still load).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ltrain.errors import LtrainError
from ltrain.models.activations import make_activation
from ltrain.models.groups import format_groups, layer_groups
from ltrain.models.init import init_weights
from ltrain.models.network import eval_mode_restored


def apply_surgery(
    model: nn.Module,
    num_classes: int,
    input_shape: tuple[int, int, int],
    reset_head: bool = False,
    drop_top: int = 0,
    add_dense: Sequence[int] = (),
    dense_activation: str = "elu",
    dense_init: str = "he_normal",
) -> nn.Module:
    """The ``model.surgery`` config: optionally drop the top groups, then a fresh head (with extra dense layers).

    Args:
        reset_head: re-initialise the output layer even if it has the right size (the book's "replace
            the output layer" when the reused model came from the same number of classes).
        drop_top: remove this many layer groups right below the head (the head is rebuilt to fit).
        add_dense: widths of new dense layers inserted between the features and the output layer.
        dense_activation, dense_init: their activation and initialiser (ltrain names, e.g. elu / he_normal).
    """
    if drop_top:
        drop_top_groups(model, drop_top, num_classes, input_shape)
    if add_dense:
        add_dense_layers(model, add_dense, num_classes, input_shape, dense_activation, dense_init)
    elif reset_head and not drop_top:
        replace_head(model, num_classes, input_shape)
    return model


def replace_head(model: nn.Module, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """A freshly initialised output layer for ``num_classes`` (timm's ``reset_classifier`` where it exists)."""
    if callable(getattr(model, "reset_classifier", None)):
        model.reset_classifier(num_classes)
        return model
    _set_head(model, nn.Linear(_head_in_features(model, input_shape), num_classes))
    return model


def drop_top_groups(model: nn.Module, k: int, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """Replace the ``k`` layer groups below the head by ``nn.Identity``, then refit the head to the new width."""
    groups = layer_groups(model)
    body = groups[:-1]
    if not 1 <= k < len(body):
        raise LtrainError(
            f"model.surgery.drop_top={k}: keep at least one group below the head; this model has "
            f"{len(body)} groups below it:\n{format_groups(model)}"
        )
    for group in body[-k:]:
        for name in _top_modules(model, set(group.param_names)):
            model.set_submodule(name, nn.Identity())
    try:
        width = _head_in_features(model, input_shape)
    except RuntimeError as e:
        raise LtrainError(
            f"model.surgery.drop_top={k}: the model no longer runs without its top {k} groups "
            f"({str(e).splitlines()[0]}); try another k. Groups were:\n" + "\n".join(g.name for g in groups)
        ) from e
    for attr in ("num_features", "head_hidden_size"):
        if isinstance(getattr(model, attr, None), int):
            setattr(model, attr, width)
    _set_head(model, nn.Linear(width, num_classes))
    return model


def add_dense_layers(
    model: nn.Module,
    units: Sequence[int],
    num_classes: int,
    input_shape: tuple[int, int, int],
    activation: str = "elu",
    init: str = "he_normal",
) -> nn.Module:
    """Replace the output layer by ``Linear -> activation`` blocks of ``units`` widths and a new output layer.

    The new layers all belong to the ``head`` layer group (they replace the classifier module).
    """
    width = _head_in_features(model, input_shape)
    layers: list[nn.Module] = []
    for n in units:
        layers += [nn.Linear(width, n), make_activation(activation)]
        width = n
    hidden = init_weights(nn.Sequential(*layers), init)
    _set_head(model, nn.Sequential(*hidden, nn.Linear(width, num_classes)))
    return model


def _head_path(model: nn.Module) -> str:
    """The attribute path of the classifier module (timm's ``get_classifier`` or the head group's module)."""
    get = getattr(model, "get_classifier", None)
    if callable(get):
        head = get()
        head = head[0] if isinstance(head, tuple) else head
        for name, module in model.named_modules():
            if module is head and name:
                return name
    params = layer_groups(model)[-1].param_names
    parts = [p.split(".")[:-1] for p in params]
    common = []
    for level in zip(*parts, strict=True):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    if not common:
        raise LtrainError("cannot find this model's output layer: give it a get_classifier() method")
    return ".".join(common)


def _set_head(model: nn.Module, head: nn.Module) -> None:
    model.set_submodule(_head_path(model), head)
    if hasattr(model, "num_classes") and isinstance(head, (nn.Linear, nn.Sequential)):
        model.num_classes = head[-1].out_features if isinstance(head, nn.Sequential) else head.out_features


class _Stop(Exception):
    pass


def _head_in_features(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Width of what reaches the classifier, by running one dummy input up to it."""
    head = model.get_submodule(_head_path(model))
    seen: list[int] = []

    def grab(module: nn.Module, args: tuple[Any, ...]) -> None:
        seen.append(args[0].shape[1] if args[0].ndim > 1 else args[0].shape[0])
        raise _Stop

    hook = head.register_forward_pre_hook(grab)
    try:
        with eval_mode_restored(model), torch.no_grad():
            model(torch.zeros(1, *input_shape))
    except _Stop:
        pass
    finally:
        hook.remove()
    if not seen:
        raise RuntimeError("the classifier was never called")
    return int(seen[0])


def _top_modules(model: nn.Module, param_names: set[str]) -> list[str]:
    """The outermost submodules whose every parameter is in ``param_names`` (what to cut out)."""
    out: list[str] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(f"{o}.") for o in out):
            continue
        own = [f"{name}.{n}" for n, _ in module.named_parameters()]
        if own and all(n in param_names for n in own):
            out.append(name)
    return out
