"""``resume=auto|PATH``: find the checkpoint and run directory a training run should continue from."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ltrain.errors import LtrainError

IGNORED_KEYS = ("resume",)


def runs_root() -> Path:
    return Path(os.environ.get("LTRAIN_RUNS", "runs"))


def _comparable(cfg: DictConfig) -> dict:
    c = OmegaConf.to_container(cfg, resolve=False)
    for k in IGNORED_KEYS:
        c.pop(k, None)
    return c


def check_checkpoint(path: Path, module) -> None:
    """Refuse a checkpoint that is unreadable, truncated, or of another architecture, before fitting."""
    import torch

    from ltrain.checkpoint_io import verify_checkpoint

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


def find_resume_point(cfg: DictConfig, run_dir: Path) -> tuple[Path, Path | None]:
    """(run directory to write to, checkpoint to resume from or None).

    ``resume=auto`` takes ``run_dir``'s own ``last.ckpt`` if it has one (a rerun with the same
    ``hydra.run.dir``), otherwise the newest run under ``$LTRAIN_RUNS`` whose saved config equals this one.
    """
    resume = cfg.get("resume")
    if not resume:
        return run_dir, None
    if resume != "auto":
        path = Path(str(resume)).expanduser()
        if not path.is_file():
            raise LtrainError(f"resume={resume}: no such checkpoint file (or use resume=auto)")
        return run_dir, path
    own = run_dir / "checkpoints" / "last.ckpt"
    if own.is_file():
        return run_dir, own
    want = _comparable(cfg)
    candidates = sorted(runs_root().rglob("checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    for ckpt in candidates:
        saved = ckpt.parent.parent / "config.yaml"
        if saved.is_file() and _comparable(OmegaConf.load(saved)) == want:
            return ckpt.parent.parent, ckpt
    return run_dir, None  # nothing to resume: start afresh
