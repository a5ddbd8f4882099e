"""Class subsets, relabelling, per-class caps and deterministic stratified splits."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ltrain.errors import LtrainError
from ltrain.seeding import Stream, derive_seed


def select_classes(labels: torch.Tensor, classes: Sequence[int] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the examples whose label is in ``classes`` and their labels renumbered 0..len(classes)-1.

    The new label of class ``classes[i]`` is ``i``, so ``classes=[5, 6, 7, 8, 9]`` maps digit 5 to 0.
    """
    if classes is None:
        return torch.arange(len(labels)), labels.clone()
    classes = list(classes)
    if not classes:
        raise LtrainError(
            "data.classes is empty: list the classes to keep, e.g. data.classes=[0,1,2,3,4], or null for all"
        )
    present = set(labels.unique().tolist())
    missing = [c for c in classes if c not in present]
    if missing:
        raise LtrainError(
            f"data.classes names {missing}, which the dataset does not have; its classes are {sorted(present)}"
        )
    if len(set(classes)) != len(classes):
        raise LtrainError(f"data.classes repeats a class: {classes}")
    lookup = torch.full((int(labels.max()) + 1,), -1, dtype=torch.long)
    lookup[torch.tensor(classes)] = torch.arange(len(classes))
    new = lookup[labels]
    keep = torch.nonzero(new >= 0).flatten()
    return keep, new[keep]


def stratified_split(labels: torch.Tensor, fractions: Sequence[float], seed: int) -> list[torch.Tensor]:
    """Split example indices into disjoint parts with the given fractions, class by class.

    The first part takes what the other fractions leave. The same labels and seed always give the
    same split (a private ``torch.Generator``; the global RNG is not touched).
    """
    if any(f < 0 for f in fractions) or sum(fractions[1:]) >= 1:
        raise LtrainError(f"split fractions {list(fractions[1:])} must be >= 0 and sum to less than 1")
    gen = torch.Generator().manual_seed(seed)
    parts: list[list[torch.Tensor]] = [[] for _ in fractions]
    for c in labels.unique(sorted=True).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        start = len(idx)
        for p in range(len(fractions) - 1, 0, -1):
            n = round(fractions[p] * len(idx))
            parts[p].append(idx[start - n : start])
            start -= n
        parts[0].append(idx[:start])
    return [torch.sort(torch.cat(p))[0] if p else torch.empty(0, dtype=torch.long) for p in parts]


def cap_per_class(indices: torch.Tensor, labels: torch.Tensor, cap: int | None, seed: int) -> torch.Tensor:
    """Keep at most ``cap`` examples of each class among ``indices`` (a seeded random choice)."""
    if cap is None:
        return indices
    if cap <= 0:
        raise LtrainError(f"a per-class cap must be positive, got {cap}")
    gen = torch.Generator().manual_seed(derive_seed(Stream.CLASS_CAP, seed))
    kept = []
    sub = labels[indices]
    for c in sub.unique(sorted=True).tolist():
        idx = indices[sub == c]
        if len(idx) < cap:
            raise LtrainError(
                f"class {c} has only {len(idx)} training examples, fewer than the cap of {cap} per class; "
                f"lower data.train_per_class or use more data"
            )
        kept.append(idx[torch.randperm(len(idx), generator=gen)[:cap]])
    return torch.sort(torch.cat(kept))[0]
