"""Layer groups: a model's parameters cut into ordered groups, bottom (stem) to top (head).

timm already knows how to cut its models: every architecture has a ``group_matcher`` (regexes or a
function mapping a parameter name to an ordinal) and ``timm.models.group_parameters`` turns it into
ordered groups. What timm lacks for transfer learning, and what this module adds:

- the classifier is split off as its own top group named ``head`` (timm lumps it together with the
  "neck" — e.g. EfficientNet's ``conv_head``/``bn2`` — as "everything unmatched");
- each group gets a readable, unique name (``stem``, ``layer3``, ``blocks.11+norm``, ``head``);
- a fallback for models without a ``group_matcher`` (plain modules such as :func:`build_mlp`):
  one group per top-level child that owns parameters, in registration order, the last one being
  the head (for ``build_mlp``: ``hidden0`` ... ``hidden4``, ``head``; ``flatten`` has no parameters).

Every parameter of the model (``named_parameters``) is in exactly one group.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

HEAD = "head"


@dataclass(frozen=True)
class LayerGroup:
    """One group of layers: its name and the (model-relative) names of its parameters."""

    name: str
    param_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.param_names)


def layer_groups(model: nn.Module) -> list[LayerGroup]:
    """The model's parameters in ordered groups, bottom -> top; the top group is the classifier (``head``).

    Uses ``model.group_matcher(coarse=True)`` when the model has one (every timm model), else one group
    per top-level child with parameters. Parameter names are relative to ``model``.
    """
    names = [n for n, _ in model.named_parameters()]
    if not names:
        return []
    matcher = _timm_matcher(model)
    groups = _groups_from_matcher(model, matcher) if matcher is not None else _groups_by_child(model)
    groups = _split_off_head(model, groups)
    return [LayerGroup(name, tuple(params)) for name, params in groups]


def format_groups(model: nn.Module) -> str:
    """A table of the layer groups (bottom -> top) with parameter counts, as ``ltrain groups`` prints it."""
    params = dict(model.named_parameters())
    rows = [
        (i, g.name, len(g.param_names), sum(params[n].numel() for n in g.param_names))
        for i, g in enumerate(layer_groups(model))
    ]
    width = max([len("group")] + [len(r[1]) for r in rows])
    lines = [f"{'#':>3}  {'group':<{width}}  {'tensors':>7}  {'parameters':>12}"]
    lines += [f"{i:>3}  {name:<{width}}  {n:>7}  {count:>12,}" for i, name, n, count in rows]
    total = sum(r[3] for r in rows)
    lines.append(f"{'':>3}  {'total':<{width}}  {sum(r[2] for r in rows):>7}  {total:>12,}")
    lines.append("(bottom -> top; freeze.phases[*].trainable takes 'head', 'all', 'top:K' or a list of these names)")
    return "\n".join(lines)


def _timm_matcher(model: nn.Module) -> dict | Callable | None:
    fn = getattr(model, "group_matcher", None)
    if not callable(fn):
        return None
    try:
        return fn(coarse=True)
    except (NotImplementedError, TypeError):
        return None


def _groups_from_matcher(model: nn.Module, matcher: dict | Callable) -> list[tuple[str, list[str]]]:
    """timm's own grouping (``group_parameters``), each group named by what its regexes matched."""
    from timm.models import group_parameters

    by_id = group_parameters(model, matcher)  # {ordinal: [param names]}, ordered bottom -> top
    keys = _matcher_keys(matcher)
    head = set(_classifier_names(model, []))
    groups = [[n for n in ids if n not in head] for ids in by_id.values()]
    groups = [ids for ids in groups if ids]
    key_of = {n: _matching_key(n, keys) for ids in groups for n in ids}
    groups_per_key: dict[str | None, int] = {}
    for ids in groups:
        for key in {key_of[n] for n in ids}:
            groups_per_key[key] = groups_per_key.get(key, 0) + 1
    out = []
    for ids in groups:
        key = key_of[ids[0]]
        if key is not None and groups_per_key[key] == 1 and all(key_of[n] == key for n in ids):
            name = key  # e.g. resnet's conv1 + bn1 + maxpool -> "stem"
        else:
            name = "+".join(dict.fromkeys(_matched_text(n, keys) for n in ids))  # e.g. "blocks.11+norm"
        out.append((name, ids))
    return out


def _matcher_keys(matcher: dict | Callable) -> list[tuple[str, re.Pattern]]:
    if not isinstance(matcher, dict):
        return []
    keys = []
    for key, spec in matcher.items():
        if spec is None:
            continue
        specs = spec if isinstance(spec, (list, tuple)) else [(spec, None)]
        keys += [(key, re.compile(s[0])) for s in specs]
    return keys


def _matching_key(name: str, keys: list[tuple[str, re.Pattern]]) -> str | None:
    return next((key for key, rx in keys if rx.match(name)), None)


def _matched_text(name: str, keys: list[tuple[str, re.Pattern]]) -> str:
    """What the matching regex matched (``layer3``, ``blocks.11``), else the top-level module name."""
    for _, rx in keys:
        m = rx.match(name)
        if m and m.group(0):
            return m.group(0).rstrip(".")
    return name.split(".", 1)[0]


def _groups_by_child(model: nn.Module) -> list[tuple[str, list[str]]]:
    """Fallback: parameters owned directly by ``model`` first (as ``root``), then one group per child."""
    own = [n for n, _ in model.named_parameters(recurse=False)]
    out = [("root", own)] if own else []
    seen = set(own)
    for child_name, child in model.named_children():
        params = [f"{child_name}.{n}" for n, _ in child.named_parameters()]
        params = [n for n in params if n not in seen]  # shared parameters count once (first owner)
        if params:
            out.append((child_name, params))
            seen.update(params)
    return out


def _classifier_names(model: nn.Module, groups: list[tuple[str, list[str]]]) -> list[str]:
    """Names of the classifier's parameters: timm's ``get_classifier()``, else the top group's."""
    get = getattr(model, "get_classifier", None)
    if callable(get):
        heads = get()
        heads = heads if isinstance(heads, (tuple, list)) else (heads,)
        ids = {id(p) for h in heads if isinstance(h, nn.Module) for p in h.parameters()}
        if ids:
            return [n for n, p in model.named_parameters() if id(p) in ids]
    return list(groups[-1][1]) if groups else []


def _split_off_head(model: nn.Module, groups: list[tuple[str, list[str]]]) -> list[tuple[str, list[str]]]:
    """Move the classifier's parameters into a last group named ``head``; drop emptied groups."""
    head = set(_classifier_names(model, groups))
    out = [(name, [n for n in params if n not in head]) for name, params in groups]
    out = [(name if name != HEAD else "pre_head", params) for name, params in out if params]
    out.append((HEAD, [n for n, _ in model.named_parameters() if n in head]))
    return _unique_names([(name, params) for name, params in out if params])


def _unique_names(groups: list[tuple[str, list[str]]]) -> list[tuple[str, list[str]]]:
    counts: dict[str, int] = {}
    out = []
    for name, params in groups:
        counts[name] = counts.get(name, 0) + 1
        out.append((name if counts[name] == 1 else f"{name}_{counts[name]}", params))
    return out
