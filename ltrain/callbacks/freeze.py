"""FreezeSchedule: freeze, train the head, then unfreeze the top layer groups with a lower rate.

What it adds to Lightning's ``BackboneFinetuning`` / fastai's ``fine_tune``: it works with ANY
LightningModule that exposes its network (attribute ``model`` by default, no ``backbone`` required) and
any timm model (groups from :func:`ltrain.models.layer_groups`); phases start at an epoch or when a
monitored metric plateaus; frozen BatchNorm layers keep their running statistics; and it stays correct
under LR schedulers, checkpoint resume and DDP:

- the optimizer's param groups are cut ONCE, at fit start, into one group per layer group; frozen groups
  sit at rate 0 (so the number of groups never changes: ReduceLROnPlateau and resume keep working);
- frozen parameters have ``requires_grad=False``, hence no gradient and no optimizer state;
- the phase's rate is a multiplier on each group's reference rate, applied to every field the scheduler
  derives the rate from (see :mod:`ltrain.optim.param_groups`), so schedulers keep their progress;
- under DDP the model is wrapped with every parameter still trainable (freezing happens in
  ``on_fit_start``, after the wrap) and with ``find_unused_parameters=True``, so parameters unfrozen
  later are synchronised (the trap of Lightning issue 20340).

Example::

    FreezeSchedule(phases=[
        {"trainable": "head"},                                      # epochs 0-3: the new head only
        {"at_epoch": 4, "trainable": "top:3", "lr_scale": 0.1},     # then head + 2 groups, rate x 0.1
    ])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ltrain.errors import LtrainError, close_matches
from ltrain.models.groups import HEAD, LayerGroup, format_groups, groups_from_patterns, layer_groups
from ltrain.models.network import find_network
from ltrain.optim.param_groups import (
    group_lr_reference,
    scale_group_lrs,
    schedule_progress,
    schedulers_of,
    split_param_groups,
)

BN_POLICIES = ("eval", "train", "frozen")
MODES = ("min", "max")
OTHER = "other"  # optimizer params outside the model: always trainable, rate unchanged


@dataclass(frozen=True)
class Plateau:
    """Start the phase when ``monitor`` has not improved by ``min_delta`` for ``patience`` validations."""

    monitor: str = "val/loss"
    mode: str = "min"
    patience: int = 2
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise LtrainError(f"freeze on_plateau.mode={self.mode!r} is not one of {list(MODES)}")
        if self.patience < 1:
            raise LtrainError(f"freeze on_plateau.patience={self.patience} must be >= 1")

    def improved(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value < best - self.min_delta if self.mode == "min" else value > best + self.min_delta


@dataclass(frozen=True)
class Phase:
    """What trains from the phase's start, and at what rate.

    Args:
        trainable: "head", "all", "top:K" (the top K layer groups, head included) or a list of group names.
        at_epoch: the epoch (0-based) at which the phase starts. The first phase starts at 0.
        on_plateau: instead of ``at_epoch``, start when a metric plateaus (a :class:`Plateau` or its dict).
        lr: the trainable groups' base rate, absolute (the rate the LR scheduler multiplies).
        lr_scale: or a multiplier of each group's configured rate (default 1.0).
        layer_decay: optional; the trainable group d places below the top one gets ``layer_decay ** d`` more.
    """

    trainable: str | int | Sequence[str] = HEAD
    at_epoch: int | None = None
    on_plateau: Plateau | None = None
    lr: float | None = None
    lr_scale: float | None = None
    layer_decay: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.on_plateau, dict):
            object.__setattr__(self, "on_plateau", Plateau(**self.on_plateau))
        if isinstance(self.trainable, (list, tuple)):
            object.__setattr__(self, "trainable", tuple(self.trainable))
        if self.lr is not None and self.lr_scale is not None:
            raise LtrainError("a freeze phase takes lr (absolute) OR lr_scale (a multiplier), not both")
        if (self.lr is not None and self.lr < 0) or (self.lr_scale is not None and self.lr_scale < 0):
            raise LtrainError("freeze phase rates must be >= 0")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise LtrainError(f"freeze layer_decay={self.layer_decay} must be in (0, 1]")
        if self.at_epoch is not None and self.on_plateau is not None:
            raise LtrainError("a freeze phase starts at_epoch OR on_plateau, not both")


DEFAULT_PHASES = (Phase(trainable=HEAD), Phase(trainable="top:3", at_epoch=4, lr_scale=0.1))


def _as_phase(spec: Phase | dict[str, Any]) -> Phase:
    if isinstance(spec, Phase):
        return spec
    known = {f.name for f in fields(Phase)}
    unknown = [k for k in spec if k not in known]
    if unknown:
        raise LtrainError(f"unknown freeze phase keys {unknown}; valid keys: {sorted(known)}")
    return Phase(**spec)


@dataclass
class _Runtime:
    """What on_fit_start builds (not saved: rebuilt from the model at every fit)."""

    model: nn.Module
    groups: list[LayerGroup]
    params: dict[str, list[nn.Parameter]]  # layer group name -> its parameters
    bn: dict[str, list[_BatchNorm]]  # layer group name -> BN layers whose parameters it holds
    optimizers: list[torch.optim.Optimizer] = field(default_factory=list)
    schedulers: list[Any] = field(default_factory=list)
    refs: list[list[dict[str, float]]] = field(default_factory=list)  # per optimizer, per group
    scales: list[list[float]] = field(default_factory=list)


class FreezeSchedule(Callback):
    """Train a model's layer groups in phases: which groups are trainable, from when, at what rate.

    Args:
        phases: a list of :class:`Phase` (or dicts with its fields); default: the book's recipe (head only
            for 4 epochs, then the head and the 2 groups below it at a tenth of the rate).
        bn: "eval" keeps BatchNorm layers of frozen groups in eval mode (running statistics frozen);
            "train" lets them update their statistics; "frozen" keeps EVERY BatchNorm layer frozen (eval
            mode, statistics and affine parameters fixed) even after its group unfreezes (Lightning's
            ``train_bn=False``; the usual choice when fine-tuning on small batches).
        groups: explicit layer groups ``{name: [module-name patterns]}``, bottom -> top, for networks
            timm cannot group; refused with a table when a parameter is left out or ``head`` is not the
            classifier (see :func:`ltrain.models.groups.groups_from_patterns`). Default: ``layer_groups``.
        model_attr: the LightningModule attribute holding the network; None finds it
            (:func:`ltrain.models.network.find_network`: the module's only child holding parameters, else
            the module itself; torch.compile and DDP wrappers are looked through).
        verbose: log each phase change (rank zero).
    """

    def __init__(
        self,
        phases: Sequence[Phase | dict[str, Any]] | None = None,
        bn: str = "eval",
        model_attr: str | None = None,
        verbose: bool = True,
        groups: dict[str, Sequence[str]] | None = None,
    ):
        if bn not in BN_POLICIES:
            raise LtrainError(f"freeze.bn={bn!r} is not one of {list(BN_POLICIES)}")
        self.phases = [_as_phase(p) for p in (phases if phases is not None else DEFAULT_PHASES)]
        _check_phase_order(self.phases)
        self.bn = bn
        self.model_attr = model_attr
        self.groups = dict(groups) if groups is not None else None
        self.verbose = verbose
        self.phase = 0  # index of the current phase
        self.pending = False  # the next phase's plateau trigger fired; start it at the next epoch
        self.plateau_best: float | None = None
        self.plateau_wait = 0
        self._saved_groups: list[str] | None = None  # the layer groups named in a restored checkpoint
        self._rt: _Runtime | None = None

    # ---- what users and tests query -------------------------------------------------------------
    def trainable_groups(self, phase: int | None = None) -> list[str]:
        """Names of the layer groups trainable in ``phase`` (default: the current one), bottom -> top."""
        assert self._rt is not None, "the schedule knows its model's groups from setup on"
        return _resolve(self.phases[self.phase if phase is None else phase], self._rt.groups)

    # ---- Lightning hooks ------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        model = self._find_model(pl_module)
        groups = groups_from_patterns(model, self.groups) if self.groups is not None else layer_groups(model)
        for phase in self.phases:
            _resolve(phase, groups, model)  # invalid specs fail here, before any training
        named = dict(model.named_parameters())
        params = {g.name: [named[n] for n in g.param_names] for g in groups}
        self._rt = _Runtime(model, groups, params, _bn_by_group(model, groups))
        for p in model.parameters():  # DDP (wrapping next) must register every parameter: 20340
            p.requires_grad_(True)
        _enable_ddp_unused_parameters(trainer)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rt = self._rt
        if rt is None:
            return
        order = [g.name for g in rt.groups]
        group_of = {id(p): name for name, ps in rt.params.items() for p in ps}
        rt.schedulers = [c.scheduler for c in trainer.lr_scheduler_configs]
        rt.optimizers = list(trainer.optimizers)
        rt.refs, rt.scales = [], []
        for opt in rt.optimizers:
            split_param_groups(opt, group_of, order, rt.schedulers)
            rt.refs.append(group_lr_reference(opt, rt.schedulers))
            rt.scales.append([1.0] * len(opt.param_groups))
        self._apply(self.phase, trainer, announce=self.phase > 0)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        target = self.phase
        while target + 1 < len(self.phases):  # (several epoch triggers may have passed, e.g. max_epochs raised)
            start = self.phases[target + 1].at_epoch
            if not (self.pending and target == self.phase) and (start is None or trainer.current_epoch < start):
                break
            target += 1
        if target != self.phase:
            self.phase, self.pending = target, False
            self.plateau_best, self.plateau_wait = None, 0
            self._apply(target, trainer, announce=True)
        self._freeze_bn()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._freeze_bn()  # a model.train() (user hooks, on_validation_model_train, older Lightning) undoes it

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        nxt = self.phase + 1
        if trainer.sanity_checking or nxt >= len(self.phases) or self.phases[nxt].on_plateau is None:
            return
        trigger = self.phases[nxt].on_plateau
        if trigger.monitor not in trainer.callback_metrics:
            raise LtrainError(
                f"freeze phase {nxt} waits for {trigger.monitor!r} to plateau, but it is not logged; "
                f"logged metrics: {sorted(trainer.callback_metrics)}"
            )
        value = float(trainer.callback_metrics[trigger.monitor])
        if trigger.improved(value, self.plateau_best):
            self.plateau_best, self.plateau_wait = value, 0
        else:
            self.plateau_wait += 1
        fire = self.plateau_wait >= trigger.patience
        self.pending = bool(trainer.strategy.reduce_boolean_decision(fire, all=False))

    def state_dict(self) -> dict[str, Any]:
        state = {
            "phase": self.phase,
            "pending": self.pending,
            "plateau_best": self.plateau_best,
            "plateau_wait": self.plateau_wait,
        }
        if self._rt is not None:
            state["trainable"] = self.trainable_groups()
            state["groups"] = [g.name for g in self._rt.groups]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the phase; on_fit_start re-applies it (the rates come back with the optimizer's state)."""
        if state_dict["phase"] >= len(self.phases):
            raise LtrainError(
                f"the checkpoint is in freeze phase {state_dict['phase']}, but this schedule has only "
                f"{len(self.phases)} phases: resume with the schedule that wrote it"
            )
        self.phase = int(state_dict["phase"])
        self.pending = bool(state_dict["pending"])
        self.plateau_best = state_dict["plateau_best"]
        self.plateau_wait = int(state_dict["plateau_wait"])
        self._saved_groups = state_dict.get("groups")

    # ---- the work -------------------------------------------------------------------------------
    def _find_model(self, pl_module: L.LightningModule) -> nn.Module:
        return find_network(pl_module, self.model_attr, "FreezeSchedule")

    def _apply(self, index: int, trainer: L.Trainer, announce: bool) -> None:
        """Make phase ``index`` current: requires_grad, optimizer state, BN modes and group rates."""
        rt = self._rt
        saved = self._saved_groups
        if saved is not None and saved != [g.name for g in rt.groups]:
            raise LtrainError(
                f"the checkpoint's layer groups {saved} differ from this model's:\n{format_groups(rt.model, rt.groups)}"
            )
        phase = self.phases[index]
        trainable = _resolve(phase, rt.groups)
        multiplier = _group_multipliers(phase, trainable)
        bn_params = {id(p) for layers in rt.bn.values() for m in layers for p in m.parameters(recurse=False)}
        for name, ps in rt.params.items():
            for p in ps:
                on = name in trainable and not (self.bn == "frozen" and id(p) in bn_params)
                p.requires_grad_(on)
                if not on:
                    p.grad = None
                    for opt in rt.optimizers:
                        opt.state.pop(p, None)
        for opt, refs, old in zip(rt.optimizers, rt.refs, rt.scales, strict=True):
            progress = schedule_progress(opt, refs, old)
            new = [_group_scale(phase, g, ref, multiplier) for g, ref in zip(opt.param_groups, refs, strict=True)]
            scale_group_lrs(opt, schedulers_of(opt, rt.schedulers), refs, new, progress)
            old[:] = new
        if announce and self.verbose:
            rates = {g["name"]: g["lr"] for g in rt.optimizers[0].param_groups} if rt.optimizers else {}
            rank_zero_info(
                f"FreezeSchedule: phase {index} from epoch {trainer.current_epoch}: trainable {trainable}; "
                f"rates { ({k: f'{v:.3g}' for k, v in rates.items() if k in trainable}) }"
            )

    def _freeze_bn(self) -> None:
        """BN of frozen groups to eval, of trainable groups back to the model's mode (it may have been frozen)."""
        rt = self._rt
        if rt is None:
            return
        trainable = set(_resolve(self.phases[self.phase], rt.groups))
        for name, layers in rt.bn.items():
            for layer in layers:
                layer.train(rt.model.training and (self.bn == "train" or (name in trainable and self.bn != "frozen")))


def _group_multipliers(phase: Phase, trainable: list[str]) -> dict[str, float]:
    """Layer-wise decay: the top trainable group gets 1, the one below ``layer_decay``, then its square..."""
    decay = phase.layer_decay or 1.0
    return {name: decay**depth for depth, name in enumerate(reversed(trainable))}


def _group_scale(phase: Phase, group: dict[str, Any], ref: dict[str, float], multiplier: dict[str, float]) -> float:
    name = group.get("name", OTHER)
    if name == OTHER:
        return 1.0
    if name not in multiplier:
        return 0.0
    if phase.lr is not None:
        base = ref.get("lr", 0.0)
        scale = phase.lr / base if base > 0 else 0.0
    else:
        scale = 1.0 if phase.lr_scale is None else phase.lr_scale
    return scale * multiplier[name]


def _resolve(phase: Phase, groups: list[LayerGroup], model: nn.Module | None = None) -> list[str]:
    """The names of the groups ``phase.trainable`` selects, bottom -> top; an LtrainError lists the groups."""
    names = [g.name for g in groups]
    spec = phase.trainable

    def fail(why: str) -> LtrainError:
        table = format_groups(model, groups) if model is not None else "\n".join(names)
        return LtrainError(
            f"freeze phase trainable={spec!r}: {why}. The model's layer groups (bottom -> top):\n{table}"
        )

    if isinstance(spec, str) and spec == "all":
        return names
    if isinstance(spec, str) and spec == HEAD:
        if HEAD not in names:
            raise fail(
                "this network has no classifier, so no 'head' group (a trunk at model_attr?): point model_attr "
                "at the whole network, give freeze.groups, or name the trainable groups"
            )
        return [HEAD]
    if isinstance(spec, int) or (isinstance(spec, str) and spec.startswith("top:")):
        try:
            k = int(spec if isinstance(spec, int) else spec[4:])
        except ValueError:
            raise fail("'top:K' needs an integer K") from None
        if not 1 <= k <= len(names):
            raise fail(f"K={k} must be between 1 and the number of groups, {len(names)}")
        return names[-k:]
    wanted = [spec] if isinstance(spec, str) else list(spec)
    unknown = [w for w in wanted if w not in names]
    if unknown:
        hints = list(dict.fromkeys(m for w in unknown for m in close_matches(w, names, n=3)))
        raise fail(
            f"unknown group(s) {unknown}"
            + (f" (close: {hints})" if hints else "")
            + "; use 'head', 'all', 'top:K' or group names"
        )
    if not wanted:
        raise fail("no group is trainable")
    return [n for n in names if n in wanted]


def _check_phase_order(phases: list[Phase]) -> None:
    if not phases:
        raise LtrainError("a FreezeSchedule needs at least one phase")
    first = phases[0]
    if first.on_plateau is not None or first.at_epoch not in (None, 0):
        raise LtrainError("the first freeze phase starts at epoch 0: remove its at_epoch / on_plateau")
    last = 0
    for i, phase in enumerate(phases[1:], start=1):
        if phase.at_epoch is None and phase.on_plateau is None:
            raise LtrainError(f"freeze phase {i} needs at_epoch or on_plateau to say when it starts")
        if phase.at_epoch is not None:
            if phase.at_epoch <= last:
                starts = [p.at_epoch for p in phases]
                raise LtrainError(
                    f"freeze phase epochs must increase: phase {i} starts at epoch {phase.at_epoch} "
                    f"(phase starts: {starts})"
                )
            last = phase.at_epoch


def _bn_by_group(model: nn.Module, groups: list[LayerGroup]) -> dict[str, list[_BatchNorm]]:
    """BatchNorm layers by the layer group holding their affine parameters."""
    owner = {n: g.name for g in groups for n in g.param_names}
    out: dict[str, list[_BatchNorm]] = {}
    for name, module in model.named_modules():
        if isinstance(module, _BatchNorm):
            own = [f"{name}.{n}" if name else n for n, _ in module.named_parameters(recurse=False)]
            if own and own[0] in owner:
                out.setdefault(owner[own[0]], []).append(module)
    return out


def _enable_ddp_unused_parameters(trainer: L.Trainer) -> None:
    """Frozen parameters get no gradient; DDP must be told, or it waits for them (and errors)."""
    from lightning.pytorch.strategies import DDPStrategy

    strategy = trainer.strategy
    if isinstance(strategy, DDPStrategy):
        kwargs = getattr(strategy, "_ddp_kwargs", None)
        if not isinstance(kwargs, dict):
            raise LtrainError(
                "FreezeSchedule under DDP needs find_unused_parameters=True: "
                "use strategy='ddp_find_unused_parameters_true'"
            )
        if not kwargs.get("find_unused_parameters"):
            kwargs["find_unused_parameters"] = True
            rank_zero_info("FreezeSchedule: DDP set to find_unused_parameters=True (frozen parameters get no gradient)")
