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

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from torch import nn

from ltrain.errors import LtrainError
from ltrain.models.network import unwrap

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
    model = unwrap(model)  # a compiled model's groups are its original's (not one group "_orig_mod")
    names = [n for n, _ in model.named_parameters()]
    if not names:
        return []
    matcher = _timm_matcher(model)
    groups = _groups_from_matcher(model, matcher) if matcher is not None else _groups_by_child(model)
    groups = _split_off_head(model, groups)
    return [LayerGroup(name, tuple(params)) for name, params in groups]


def groups_from_patterns(model: nn.Module, spec: Mapping[str, Sequence[str]]) -> list[LayerGroup]:
    """Layer groups given by the user: ``{group name: [module-name patterns]}``, bottom -> top in dict order.

    A parameter belongs to a group when its own name or the name of a module holding it (``layer4``,
    ``layer4.0``, ...) matches one of the group's fnmatch patterns. For networks timm cannot group
    (a user's own trunk, a module with ``backbone`` + ``classifier``). Refused, with the table of what
    the patterns matched: a parameter in no group or in two, a group matching nothing, a group named
    ``head`` that is not exactly the network's classifier (:func:`classifier_names`).
    """
    model = unwrap(model)
    if not spec:
        raise LtrainError("freeze.groups is empty: give {group name: [module-name patterns]} or null")
    spec = {str(k): [v] if isinstance(v, str) else list(v) for k, v in spec.items()}
    members: dict[str, list[str]] = {g: [] for g in spec}
    unassigned, doubled = [], []
    for name, _ in model.named_parameters():
        parts = name.split(".")
        scopes = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
        hits = [g for g, pats in spec.items() if any(fnmatch.fnmatchcase(s, p) for s in scopes for p in pats)]
        if not hits:
            unassigned.append(name)
        elif len(hits) > 1:
            doubled.append(f"{name} ({' and '.join(hits)})")
        else:
            members[hits[0]].append(name)
    groups = [LayerGroup(g, tuple(ps)) for g, ps in members.items()]
    problems = []
    if unassigned:
        problems.append(f"{len(unassigned)} parameter(s) in no group: {unassigned[:6]}")
    if doubled:
        problems.append(f"parameter(s) in two groups: {doubled[:6]}")
    empty = [g for g, ps in members.items() if not ps]
    if empty:
        problems.append(f"group(s) matching no parameter: {empty}")
    if HEAD in members:
        head = classifier_names(model)
        if not head:
            problems.append(f"a group is named {HEAD!r} but {type(model).__name__} has no classifier (a trunk?)")
        elif set(members[HEAD]) != set(head):
            problems.append(f"group {HEAD!r} holds {members[HEAD][:4]}, but the classifier's parameters are {head[:4]}")
    if problems:
        raise LtrainError(
            "freeze.groups is refused: "
            + "; ".join(problems)
            + ".\nWhat the patterns matched (bottom -> top):\n"
            + _table(model, groups)
            + "\nThe network's modules: "
            + ", ".join(n for n, c in model.named_children())
        )
    return groups


def format_groups(model: nn.Module, groups: Sequence[LayerGroup] | None = None) -> str:
    """A table of the layer groups (bottom -> top) with parameter counts, as ``ltrain groups`` prints it."""
    model = unwrap(model)
    return _table(model, list(groups) if groups is not None else layer_groups(model))


def _table(model: nn.Module, groups: list[LayerGroup]) -> str:
    params = dict(model.named_parameters())
    rows = [
        (i, g.name, len(g.param_names), sum(params[n].numel() for n in g.param_names)) for i, g in enumerate(groups)
    ]
    width = max([len("group")] + [len(r[1]) for r in rows])
    lines = [f"{'#':>3}  {'group':<{width}}  {'tensors':>7}  {'parameters':>12}"]
    lines += [f"{i:>3}  {name:<{width}}  {n:>7}  {count:>12,}" for i, name, n, count in rows]
    total = sum(r[3] for r in rows)
    lines.append(f"{'':>3}  {'total':<{width}}  {sum(r[2] for r in rows):>7}  {total:>12,}")
    if HEAD not in [g.name for g in groups]:
        lines.append("(no classifier found: there is no 'head' group)")
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
    head = set(classifier_names(model))
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


def classifier_names(model: nn.Module) -> list[str]:
    """Names of the classifier's parameters; [] when the network has none (a trunk).

    timm's ``get_classifier()`` when the model has it (empty for ``num_classes=0``); otherwise the last
    top-level child holding parameters, if it is an ``nn.Linear`` or ends with one (``nn.Sequential(...,
    nn.Linear)``) and, in an ``nn.Sequential``, the last module: a block ending in an activation, a norm
    or a pooling, or followed by one, is part of a trunk, not a head.
    """
    model = unwrap(model)
    get = getattr(model, "get_classifier", None)
    if callable(get):
        heads = get()
        heads = heads if isinstance(heads, (tuple, list)) else (heads,)
        ids = {id(p) for h in heads if isinstance(h, nn.Module) for p in h.parameters()}
        return [n for n, p in model.named_parameters() if id(p) in ids]
    holders = [(n, c) for n, c in model.named_children() if any(True for _ in c.parameters())]
    if not holders:
        return []
    name, last = holders[-1]
    if isinstance(model, nn.Sequential) and last is not model[-1]:
        return []  # something (an activation, pooling) runs after it: the output is not its logits
    leaf = last
    while len(list(leaf.children())) > 0 and isinstance(leaf, nn.Sequential):
        leaf = list(leaf.children())[-1]
    if not isinstance(leaf, nn.Linear):
        return []
    return [f"{name}.{n}" for n, _ in last.named_parameters()]


def _split_off_head(model: nn.Module, groups: list[tuple[str, list[str]]]) -> list[tuple[str, list[str]]]:
    """Move the classifier's parameters into a last group named ``head``; drop emptied groups."""
    head = set(classifier_names(model))
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
