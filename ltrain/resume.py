"""Which directory a run writes to and which checkpoint it continues from, decided before anything is written.

The rules (``resume=null|auto|PATH``), so that a run's files are written once and never mixed with another's:

- a directory that already holds a run (its ``config.yaml``) is only ever continued, never started over: a
  new run there is refused, and so is continuing it with another model, data, loss, recipe or seed;
- a FINISHED run (``results.json``) is never reopened: its results, checkpoints and history stay as they are;
- ``resume=auto`` continues this directory's own unfinished run (from ``last.ckpt``, or from scratch if it was
  stopped before its first checkpoint), else the newest unfinished run under ``$LTRAIN_RUNS`` whose saved
  config equals this one; a matching run that finished is reported and a new run starts.

Only rank zero refuses: the other ranks of a DDP run start after rank zero has written ``config.yaml``.
"""

from __future__ import annotations

import os
from pathlib import Path

from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.utilities import rank_zero_warn
from omegaconf import DictConfig, OmegaConf

from ltrain.errors import LtrainError
from ltrain.io import verify_checkpoint

IGNORED_KEYS = ("resume",)
# What a checkpoint and its results belong to: resume=auto into a run whose config differs in one of these is
# refused. The training objective and optimisation count (mixup, regularisation, freezing, optimizer and
# scheduler: Lightning restores the optimizer's learning rates from the checkpoint, so a new optimizer.lr would
# be ignored without a word); trainer.max_epochs may grow, and the trainer, callbacks, logger and cache change
# how the run is carried out, not what it computes.
IDENTITY_KEYS = ("model", "data", "loss", "recipe", "seed", "mixup", "l1", "l2", "freeze", "optimizer", "scheduler")


def runs_root() -> Path:
    return Path(os.environ.get("LTRAIN_RUNS", "runs"))


def _comparable(cfg: DictConfig) -> dict:
    c = OmegaConf.to_container(cfg, resolve=False)
    for k in IGNORED_KEYS:
        c.pop(k, None)
    return c


def load_saved_config(path: Path) -> DictConfig:
    """A run's ``config.yaml``; a damaged file is named in the error."""
    try:
        cfg = OmegaConf.load(path)
    except Exception as e:  # yaml and OmegaConf raise many types
        raise LtrainError(
            f"cannot read {path} ({type(e).__name__}: {str(e)[:200]}): the run's saved config is damaged"
        ) from e
    if not isinstance(cfg, DictConfig):
        raise LtrainError(f"cannot read {path}: it holds no config mapping")
    return cfg


def differing_keys(saved: DictConfig, cfg: DictConfig, keys: tuple[str, ...] = IDENTITY_KEYS) -> list[str]:
    """``key: saved -> new`` for every dotted key under ``keys`` whose value differs."""

    def flat(node, prefix: str) -> dict[str, object]:
        if isinstance(node, dict):
            out: dict[str, object] = {}
            for k, v in node.items():
                out |= flat(v, f"{prefix}.{k}" if prefix else str(k))
            return out or {prefix: {}}
        return {prefix: node}

    a = flat({k: OmegaConf.to_container(saved, resolve=False).get(k) for k in keys}, "")
    b = flat({k: OmegaConf.to_container(cfg, resolve=False).get(k) for k in keys}, "")
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def check_checkpoint(path: Path, module) -> None:
    """Refuse a checkpoint that is unreadable, truncated, or of another architecture, before fitting."""
    import torch

    verify_checkpoint(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        state = ckpt["state_dict"]
    except Exception as e:  # torch raises many types for a damaged zip/pickle
        raise LtrainError(
            f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: {str(e)[:200]}).\n"
            "  Resume from another checkpoint (resume=PATH) or start afresh (resume=null)"
        ) from e
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        raise LtrainError(
            f"checkpoint {path} is of another architecture than this config's model: "
            + "; ".join(
                f"{what} {keys[:5]}{' ...' if len(keys) > 5 else ''}"
                for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
                if keys
            )
            + ".\n  Resume with the config that wrote it (its run directory has config.yaml)"
        )


def _check_own_run(cfg: DictConfig, run_dir: Path) -> None:
    """Refuse to write into ``run_dir`` if it holds a finished run, or another run than ``cfg`` describes."""
    if (run_dir / "results.json").is_file():
        raise LtrainError(
            f"{run_dir} holds a finished run (results.json): its files are not rewritten. Start a new run in "
            f"another directory (drop hydra.run.dir), or continue training from its weights in a new directory: "
            f"resume={run_dir / 'checkpoints' / 'last.ckpt'} trainer.max_epochs=<more>"
        )
    if not cfg.get("resume"):
        raise LtrainError(
            f"{run_dir} already holds a run (config.yaml): resume=auto continues it; for a new run, drop "
            "hydra.run.dir (every run gets its own directory) or point it at an empty folder"
        )
    diff = differing_keys(load_saved_config(run_dir / "config.yaml"), cfg)
    if diff:
        raise LtrainError(
            f"{run_dir} holds another run than this config describes; nothing in it was changed.\n  "
            + "\n  ".join(diff)
            + "\n  Resume it with the config it was started with (its config.yaml), or start a new run "
            "in another directory"
        )


def find_resume_point(cfg: DictConfig, run_dir: Path) -> tuple[Path, Path | None]:
    """(run directory to write to, checkpoint to resume from or None), after the checks of the module doc."""
    resume = cfg.get("resume")
    own_run = (run_dir / "config.yaml").is_file()
    if own_run and rank_zero_only.rank == 0:
        _check_own_run(cfg, run_dir)
    if not resume:
        return run_dir, None
    if resume != "auto":
        path = Path(str(resume)).expanduser()
        if not path.is_file():
            raise LtrainError(f"resume={resume}: no such checkpoint file (or use resume=auto)")
        return run_dir, path
    own = run_dir / "checkpoints" / "last.ckpt"
    if own_run:  # continue this directory's run; stopped before its first checkpoint: from scratch, history kept
        return run_dir, own if own.is_file() else None
    want = _comparable(cfg)
    candidates = sorted(runs_root().rglob("checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    for ckpt in candidates:
        saved = ckpt.parent.parent / "config.yaml"
        if not saved.is_file() or _comparable(load_saved_config(saved)) != want:
            continue
        if (ckpt.parent.parent / "results.json").is_file():
            rank_zero_warn(
                f"resume=auto: the newest run with this config, {ckpt.parent.parent}, has finished (results.json); "
                f"a finished run is not reopened, so a new run starts in {run_dir}"
            )
            return run_dir, None
        return ckpt.parent.parent, ckpt
    return run_dir, None  # nothing to resume: start afresh
