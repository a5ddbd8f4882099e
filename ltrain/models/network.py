"""Find the network: the ONE lookup every ltrain callback and function uses on code ltrain did not write.

A user's LightningModule holds its network wherever it likes (``self.net``, ``self.model``,
``self.backbone`` + ``self.classifier``), maybe compiled (``torch.compile`` wraps it in an
``OptimizedModule`` whose only child is ``_orig_mod``), and at fit time Lightning may wrap it in DDP or
FSDP (``.module``). FreezeSchedule, FrozenFeatureCache, MaxNorm, TrainingDiagnostics, mc_dropout and
fold_batchnorm must all see the same network, unwrapped, or layer groups and caches go silently wrong
(a compiled timm model seen as ONE group ``_orig_mod``). The rule:

1. an explicit attribute (``model_attr``, dotted paths allowed) when given;
2. otherwise the module itself, where a LightningModule (or any module) whose parameters ALL live in
   one child is that child (``self.net = timm.create_model(...)``); metrics and losses own none;
3. at every step, wrappers are peeled off: ``OptimizedModule._orig_mod``, ``.module`` of
   DistributedDataParallel / DataParallel / FullyShardedDataParallel and Lightning's module wrappers.

Parameters are shared between a wrapper and what it wraps, so freezing or rescaling the unwrapped
network is freezing or rescaling the one that trains.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

from ltrain.errors import LtrainError

_WRAPPER_NAMES = (
    "DistributedDataParallel",
    "DataParallel",
    "FullyShardedDataParallel",
    "_LightningModuleWrapperBase",
    "_LightningPrecisionModuleWrapperBase",
    "_FabricModule",
)


def unwrap(module: nn.Module) -> nn.Module:
    """``module`` without torch.compile's OptimizedModule and DDP/FSDP/DataParallel/Lightning wrappers."""
    while True:
        orig = module.__dict__.get("_modules", {}).get("_orig_mod")
        if orig is not None and type(module).__name__ == "OptimizedModule":
            module = orig
            continue
        inner = module.__dict__.get("_modules", {}).get("module")
        if inner is not None and any(type(module).__name__ == n or _has_base(module, n) for n in _WRAPPER_NAMES):
            module = inner
            continue
        return module


def _has_base(module: nn.Module, name: str) -> bool:
    return any(cls.__name__ == name for cls in type(module).__mro__)


def network_in(module: nn.Module) -> nn.Module:
    """The network ``module`` holds: unwrapped, and descended into while ONE child owns every parameter.

    ``module`` itself when its parameters are spread over several children (``backbone`` + ``classifier``)
    or when it owns some directly.
    """
    module = unwrap(module)
    while True:
        if any(True for _ in module.parameters(recurse=False)):
            return module
        holders = [c for c in module.children() if any(True for _ in c.parameters())]
        if len(holders) != 1 or not _is_container(module):
            return module
        module = unwrap(holders[0])


def _is_container(module: nn.Module) -> bool:
    """A LightningModule or a wrapper: something whose network is inside it (an nn.Sequential IS the network)."""
    import lightning as L

    return isinstance(module, L.LightningModule) or type(module).__name__ == "OptimizedModule"


def find_network(module: nn.Module, model_attr: str | None = None, owner: str = "ltrain") -> nn.Module:
    """The network of ``module`` (a LightningModule or a network): ``module.<model_attr>`` or :func:`network_in`.

    Raises an LtrainError naming the module's children when ``model_attr`` is not an nn.Module.
    """
    if model_attr is None:
        return network_in(module)
    target: object = unwrap(module)
    for part in model_attr.split("."):
        target = getattr(target, part, None)
    if not isinstance(target, nn.Module):
        children = [n for n, _ in unwrap(module).named_children()]
        raise LtrainError(
            f"{owner} looks for the network at {type(unwrap(module)).__name__}.{model_attr}, which is not "
            f"an nn.Module. Set model_attr to one of {children} (or null to find it: the module's only "
            "child holding parameters, else the module itself)"
        )
    return unwrap(target)


@contextlib.contextmanager
def eval_mode_restored(model: nn.Module) -> Iterator[None]:
    """Every module in eval mode inside the block; each module's own mode restored after, even on error.

    The one eval-mode context of ltrain: ``model.train(was_training)`` would put a frozen BatchNorm that a
    FreezeSchedule holds in eval back into training mode; this restores every module's own flag.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode
