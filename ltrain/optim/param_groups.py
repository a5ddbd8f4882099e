"""Per-layer-group optimizer param groups, and per-group LR multipliers that LR schedulers respect.

torch has no API for "split this optimizer's groups" or "scale this group's rate and let the scheduler
continue from there"; FreezeSchedule needs both, for ANY optimizer and scheduler a LightningModule made:

- :func:`split_param_groups` cuts every param group of an existing optimizer by layer group (in place,
  before the first step), copying the group's hyperparameters, and widens the schedulers' per-group lists
  (``base_lrs``, ``lr_lambdas``, ``min_lrs``, ...) to match. The set of groups is then FIXED for the run,
  so ReduceLROnPlateau, every other scheduler and checkpoint resume see a constant number of groups.
- :func:`scale_group_lrs` multiplies a group's rate by ``scale`` relative to its reference (the values
  right after ``configure_optimizers``): the current ``lr`` keeps the schedule's progress, and every
  field a torch scheduler derives the rate from (group ``initial_lr``/``max_lr``/``min_lr``/``base_lr``,
  scheduler ``base_lrs``/``max_lrs``) is scaled too, so the next scheduler step keeps the multiplier.
  A frozen group gets scale 0: its rate is 0 and stays 0 under every multiplicative schedule.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from torch.optim import Optimizer

# Per-group hyperparameters torch's schedulers derive the rate from (OneCycleLR, CyclicLR, LRScheduler).
GROUP_LR_KEYS = ("lr", "initial_lr", "max_lr", "min_lr", "base_lr")
# Scheduler attributes holding one entry per param group; the first two scale with the group's rate.
SCHEDULER_LR_LISTS = ("base_lrs", "max_lrs")
SCHEDULER_GROUP_LISTS = (*SCHEDULER_LR_LISTS, "_last_lr", "lr_lambdas", "min_lrs", "base_momentums", "max_momentums")


def schedulers_of(optimizer: Optimizer, schedulers: Iterable[Any]) -> list[Any]:
    """The schedulers (and the ones nested in SequentialLR / ChainedScheduler) that drive ``optimizer``."""
    out = []
    for s in schedulers:
        if getattr(s, "optimizer", None) is optimizer:
            out.append(s)
            out += schedulers_of(optimizer, getattr(s, "_schedulers", ()))
    return out


def split_param_groups(
    optimizer: Optimizer, group_of: dict[int, str], order: Sequence[str], schedulers: Iterable[Any] = ()
) -> None:
    """Cut every param group of ``optimizer`` by layer group, bottom -> top, in place.

    ``group_of`` maps ``id(param)`` to its layer group's name; ``order`` lists the names bottom -> top.
    Each new group copies the hyperparameters of the group it came from and gets ``name`` (shown by
    Lightning's LearningRateMonitor). Parameters outside every layer group keep their group, named ``other``.
    Must run before the first optimizer step (no optimizer state is moved).
    """
    if optimizer.state:
        raise RuntimeError("split_param_groups must run before the optimizer's first step")
    rank = {name: i for i, name in enumerate(order)}
    n_before = len(optimizer.param_groups)
    new_groups, origin = [], []
    for gi, group in enumerate(optimizer.param_groups):
        buckets: dict[str, list] = {}
        for p in group["params"]:
            buckets.setdefault(group_of.get(id(p), "other"), []).append(p)
        for name in sorted(buckets, key=lambda n: rank.get(n, len(rank))):
            new_groups.append({**group, "params": buckets[name], "name": name})
            origin.append(gi)
    optimizer.param_groups[:] = new_groups
    for s in schedulers_of(optimizer, schedulers):
        for attr in SCHEDULER_GROUP_LISTS:
            values = getattr(s, attr, None)
            if isinstance(values, list) and len(values) == n_before:
                setattr(s, attr, [values[o] for o in origin])


def group_lr_reference(optimizer: Optimizer, schedulers: Iterable[Any]) -> list[dict[str, float]]:
    """Every rate-bearing value of each group at scale 1 (taken right after ``configure_optimizers``)."""
    scheds = schedulers_of(optimizer, schedulers)
    refs = []
    for i, group in enumerate(optimizer.param_groups):
        ref = {k: float(group[k]) for k in GROUP_LR_KEYS if isinstance(group.get(k), (int, float))}
        for j, s in enumerate(scheds):
            for attr in SCHEDULER_LR_LISTS:
                values = getattr(s, attr, None)
                if isinstance(values, list) and i < len(values):
                    ref[f"{j}.{attr}"] = float(values[i])
        refs.append(ref)
    return refs


def schedule_progress(optimizer: Optimizer, refs: Sequence[dict[str, float]], scales: Sequence[float]) -> float:
    """How far the schedule has moved the rate: ``lr / (reference lr * scale)`` of the first active group."""
    for group, ref, scale in zip(optimizer.param_groups, refs, scales, strict=True):
        if scale > 0 and ref.get("lr", 0) > 0:
            return group["lr"] / (ref["lr"] * scale)
    return 1.0


def scale_group_lrs(
    optimizer: Optimizer,
    schedulers: Iterable[Any],
    refs: Sequence[dict[str, float]],
    scales: Sequence[float],
    progress: float,
) -> None:
    """Set group i's rate to ``reference * scales[i]`` (times the schedule's ``progress`` for the live lr)."""
    scheds = schedulers_of(optimizer, schedulers)
    for i, (group, ref, scale) in enumerate(zip(optimizer.param_groups, refs, scales, strict=True)):
        for key in GROUP_LR_KEYS:
            if key in ref and key in group:
                group[key] = ref[key] * scale * (progress if key == "lr" else 1.0)
        for j, s in enumerate(scheds):
            for attr in SCHEDULER_LR_LISTS:
                if f"{j}.{attr}" in ref:
                    getattr(s, attr)[i] = ref[f"{j}.{attr}"] * scale
            last = getattr(s, "_last_lr", None)
            if isinstance(last, list) and i < len(last):
                last[i] = group["lr"]
