"""Cut a network into a frozen prefix and a trainable suffix, so that ``suffix(prefix(x)) == model(x)``.

A feature cache needs two functions: the prefix, run once per example, and the suffix, run every step
on the cached prefix outputs. Neither torch nor timm gives this for an arbitrary cut, and a timm CNN's
``forward`` is not a plain chain of its layer groups (activations, pooling and a functional dropout sit
between them). So we cut only where the computation is known to be a chain, and we prove the cut on a
probe batch before using it:

- timm models, everything below the classifier frozen: ``forward_features`` / ``forward_head`` — timm's
  own contract, ``forward(x) == forward_head(forward_features(x))``, so the head's functional dropout and
  pooling stay in the suffix;
- timm models cut lower: ``forward_features`` recorded as the order its top-level children run in; when
  running those children one after another reproduces ``forward_features`` exactly, the trunk is a
  chain (ResNet, ... ) and the cut falls before the first child holding a trainable parameter;
- ``nn.Sequential`` (e.g. :func:`ltrain.models.build_mlp`): by children.

Anything else is refused with the reason (no silent approximation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ltrain.errors import LtrainError

# Modules whose output is random in training mode: they cannot be inside a cached (run-once) prefix.
RANDOM_TYPES: tuple[type, ...] = (nn.modules.dropout._DropoutNd, nn.AlphaDropout, nn.FeatureAlphaDropout)


@dataclass
class ModelSplit:
    """A model cut in two: ``prefix`` (frozen, cached) and ``suffix`` (trained), plus where the cut is.

    ``cut`` names the topmost prefix module (e.g. ``hidden3`` or ``forward_features``): part of the cache key.
    ``prefix_modules`` / ``suffix_modules`` are the modules each side runs (for the frozen-ness checks).
    """

    cut: str
    prefix: Callable[[torch.Tensor], torch.Tensor]
    suffix: Callable[[torch.Tensor], torch.Tensor]
    prefix_modules: list[tuple[str, nn.Module]]
    suffix_modules: list[tuple[str, nn.Module]]

    def prefix_state(self) -> dict[str, torch.Tensor]:
        """Every parameter and buffer the prefix uses, by name: what the cached outputs depend on."""
        suffix_ids = {id(t) for _, m in self.suffix_modules for t in (*m.parameters(), *m.buffers())}
        state: dict[str, torch.Tensor] = {}
        for name, module in self.prefix_modules:
            for key, t in (*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)):
                if t is not None and id(t) not in suffix_ids:
                    state[f"{name}.{key}" if name else key] = t
        return state


def split_model(model: nn.Module, probe: torch.Tensor) -> ModelSplit | None:
    """Cut ``model`` just below its lowest trainable parameter; None when nothing below the top is frozen.

    ``probe`` is a small real input batch; the cut is verified on it (eval mode) before it is returned.
    Raises LtrainError when the frozen part cannot be cut off exactly.
    """
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    if len(trainable) == len(list(model.parameters())):
        return None
    if hasattr(model, "forward_features") and hasattr(model, "forward_head"):
        split = _split_timm(model, probe, trainable)
    elif isinstance(model, nn.Sequential):
        split = _split_sequential(model, list(model.named_children()), trainable)
    else:
        raise LtrainError(
            f"cannot cut {type(model).__name__} into a frozen prefix and a trainable suffix: "
            f"the cache supports timm models and nn.Sequential networks{_cuttable_children_hint(model, trainable)}"
        )
    if split is None:
        return None
    _check_frozen(split, trainable)
    _verify(model, split, probe)
    return split


def _cuttable_children_hint(model: nn.Module, trainable: set[int]) -> str:
    """What to do instead: point the cache at a child it can cut that holds frozen layers (if there is one).

    E.g. Lightning's transfer-learning example: ``feature_extractor`` (an nn.Sequential) + ``classifier``.
    """
    children = [
        name
        for name, child in model.named_children()
        if (isinstance(child, nn.Sequential) or hasattr(child, "forward_features"))
        and any(id(p) not in trainable for p in child.parameters())
    ]
    if not children:
        return " (drop the cache option)"
    return (
        f": point the cache at the part holding the frozen layers, FrozenFeatureCache(model_attr={children[0]!r}) "
        f"(cache.model_attr={children[0]}; the module's forward must pass its input straight to it), "
        "or drop the cache option"
    )


def _split_sequential(
    model: nn.Module,
    children: list[tuple[str, nn.Module]],
    trainable: set[int],
    tail: Callable[[torch.Tensor], torch.Tensor] | None = None,
    tail_modules: list[tuple[str, nn.Module]] | None = None,
) -> ModelSplit | None:
    """Cut a chain of children before the first one holding a trainable parameter."""
    first = next(
        (j for j, (_, m) in enumerate(children) if any(id(p) in trainable for p in m.parameters())), len(children)
    )
    if first == 0:
        return None
    prefix_children = children[:first]
    suffix_children = children[first:]

    def prefix(x: torch.Tensor) -> torch.Tensor:
        for _, m in prefix_children:
            x = m(x)
        return x

    def suffix(x: torch.Tensor) -> torch.Tensor:
        for _, m in suffix_children:
            x = m(x)
        return tail(x) if tail is not None else x

    return ModelSplit(
        cut=prefix_children[-1][0],
        prefix=prefix,
        suffix=suffix,
        prefix_modules=_named_subtree(prefix_children),
        suffix_modules=_named_subtree(suffix_children) + (tail_modules or []),
    )


def _split_timm(model: nn.Module, probe: torch.Tensor, trainable: set[int]) -> ModelSplit | None:
    with torch.no_grad(), _eval(model):
        features = model.forward_features(probe)
        head_modules = _modules_called(model, lambda: model.forward_head(features))
    head_params = {id(p) for _, m in head_modules for p in m.parameters(recurse=False)}
    if trainable <= head_params:
        return ModelSplit(
            cut="forward_features",
            prefix=model.forward_features,
            suffix=model.forward_head,
            prefix_modules=[(n, m) for n, m in model.named_modules() if id(m) not in {id(h) for _, h in head_modules}],
            suffix_modules=head_modules,
        )
    chain = _trunk_chain(model, probe)
    if chain is None:
        raise LtrainError(
            f"{type(model).__name__}.forward_features is not a chain of its top-level modules, so it "
            "cannot be cut below the head: cache it with every group but the head frozen "
            "(freeze.phases.0.trainable=head), or drop the cache option"
        )
    return _split_sequential(model, chain, trainable, tail=model.forward_head, tail_modules=head_modules)


def _trunk_chain(model: nn.Module, probe: torch.Tensor) -> list[tuple[str, nn.Module]] | None:
    """The top-level children ``forward_features`` runs, in order, if running them in turn reproduces it."""
    children = dict(model.named_children())
    order: list[str] = []
    hooks = [m.register_forward_pre_hook(lambda _m, _a, name=name: order.append(name)) for name, m in children.items()]
    try:
        with torch.no_grad(), _eval(model):
            expected = model.forward_features(probe)
    finally:
        for h in hooks:
            h.remove()
    if len(order) != len(set(order)):
        return None
    chain = [(name, children[name]) for name in order]
    with torch.no_grad(), _eval(model):
        x = probe
        for _, m in chain:
            x = m(x)
    if x.shape != expected.shape or not torch.allclose(x, expected, rtol=1e-5, atol=1e-6):
        return None
    return chain


def _modules_called(model: nn.Module, run: Callable[[], object]) -> list[tuple[str, nn.Module]]:
    called: dict[int, tuple[str, nn.Module]] = {}

    def record(name: str, module: nn.Module) -> None:  # a pre-hook returning a value would replace the input
        called.setdefault(id(module), (name, module))

    hooks = [
        m.register_forward_pre_hook(lambda mod, _a, name=name: record(name, mod))
        for name, m in model.named_modules()
        if m is not model
    ]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return _named_subtree(list(called.values()))


def _named_subtree(roots: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
    out: dict[int, tuple[str, nn.Module]] = {}
    for root_name, root in roots:
        for name, m in root.named_modules(prefix=root_name):
            out.setdefault(id(m), (name, m))
    return list(out.values())


def _check_frozen(split: ModelSplit, trainable: set[int]) -> None:
    """Every prefix parameter frozen; nothing random in the prefix (its output must not vary between epochs)."""
    suffix_ids = {id(p) for _, m in split.suffix_modules for p in m.parameters()}
    for name, module in split.prefix_modules:
        for key, p in module.named_parameters(recurse=False):
            if id(p) in trainable and id(p) not in suffix_ids:
                raise LtrainError(
                    f"parameter {name}.{key} is trainable but below the cut at {split.cut!r}: "
                    "freeze whole layer groups from the bottom (freeze.phases.*.trainable)"
                )
        if (isinstance(module, RANDOM_TYPES) and getattr(module, "p", 0) > 0) or (
            type(module).__name__ == "DropPath" and getattr(module, "drop_prob", 0) > 0
        ):
            raise LtrainError(
                f"{name} ({module}) is random in training and lies in the frozen part below "
                f"{split.cut!r}: its output changes every epoch, so it cannot be cached. "
                "Remove it from the frozen layers (e.g. model.dropout_layers) or drop the cache option"
            )


def _verify(model: nn.Module, split: ModelSplit, probe: torch.Tensor) -> None:
    with torch.no_grad(), _eval(model):
        expected = model(probe)
        got = split.suffix(split.prefix(probe))
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
        diff = (got - expected).abs().max().item() if got.shape == expected.shape else f"shape {tuple(got.shape)}"
        raise LtrainError(
            f"cutting {type(model).__name__} at {split.cut!r} changes its output ({diff}): "
            "this model cannot be cached at this cut; drop the cache option"
        )


class _eval:
    """Context: the model in eval mode (BN running statistics, no dropout), restored afterwards per module."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self) -> None:
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        for m, mode in self.modes:
            m.training = mode


eval_mode = _eval
