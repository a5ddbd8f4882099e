"""Where ltrain's configs live: inside the installed package, or at the top of a source checkout."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def conf_dir() -> Path:
    """The Hydra config directory: ``ltrain/conf`` in a wheel, ``conf/`` in a source checkout."""
    for candidate in (_PKG / "conf", _PKG.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"ltrain's configs are missing: looked in {_PKG / 'conf'} and {_PKG.parent / 'conf'}")
