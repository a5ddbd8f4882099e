"""Presets (config group ``preset``): check that the composed config still honours the chosen preset.

A preset YAML sets the keys of its recipe (``conf/preset/*.yaml``) and lists under ``preset.requires``
the values it cannot do without. Command-line overrides win over a preset in Hydra, so a user can
silently break it (``preset=self_normalizing model.batch_norm=before``); ``apply_preset`` runs before
any work and refuses such a contradiction with a message naming the key, or adapts the config and
says what it changed (``batch_norm: auto`` -> before/none by depth; MLP-only keys dropped for a timm
model).
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf, open_dict

from ltrain.errors import LtrainError
from ltrain.models.factory import MLP_KEYS

log = logging.getLogger(__name__)


def apply_preset(cfg: DictConfig) -> list[str]:
    """Refuse overrides that contradict ``cfg.preset.requires``; resolve what the preset left to decide.

    Returns one line per change made to ``cfg`` (also logged). A config without a preset is untouched,
    except that ``model.batch_norm: auto`` is always resolved.
    """
    preset = cfg.get("preset") or {}
    name = preset.get("name", "?")
    problems = []
    for key, allowed in (preset.get("requires") or {}).items():
        value = OmegaConf.select(cfg, key, default=None)
        allowed = list(allowed)
        if value not in allowed:
            problems.append(f"  {key}={value} (preset {name} needs {' or '.join(map(str, allowed))})")
    if problems:
        raise LtrainError(
            f"preset={name} cannot be honoured with these settings:\n"
            + "\n".join(problems)
            + "\n  Drop those overrides, or run without the preset (preset=null) to choose freely."
        )
    changes = _fit_to_model(cfg, name) + _resolve_auto_batch_norm(cfg, preset.get("deep_from", 10))
    for line in changes:
        log.warning("preset %s: %s", name, line)
    return changes


def _fit_to_model(cfg: DictConfig, name: str) -> list[str]:
    """A timm model has its own init, activation and norm layers: drop the MLP-only keys a preset set."""
    model = cfg.get("model")
    if model is None or model.get("name") == "mlp":
        return []
    stray = [k for k in MLP_KEYS if model.get(k) is not None]
    if not stray:
        return []
    with open_dict(cfg):
        for k in stray:
            del cfg.model[k]
    return [
        f"model.{{{', '.join(stray)}}} apply to the MLP only; the timm model {model.name} keeps its own "
        "initialisation, activations and normalisation"
    ]


def _resolve_auto_batch_norm(cfg: DictConfig, deep_from: int) -> list[str]:
    """``model.batch_norm: auto`` -> "before" for an MLP of at least ``deep_from`` hidden layers, else "none"."""
    model = cfg.get("model")
    if model is None or model.get("batch_norm") != "auto":
        return []
    depth = len(model.get("hidden") or [])
    choice = "before" if depth >= deep_from else "none"
    cfg.model.batch_norm = choice
    why = f">= {deep_from}: deep" if choice == "before" else f"< {deep_from}: not deep"
    return [f"model.batch_norm=auto -> {choice} ({depth} hidden layers {why})"]
