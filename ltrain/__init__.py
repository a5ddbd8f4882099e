"""ltrain: the craft of training deep networks as Lightning callbacks, modules and Hydra configs."""

__version__ = "0.1.0"

from ltrain.errors import LtrainError

__all__ = ["LtrainError", "__version__", "from_run"]


def from_run(run_dir):  # pragma: no cover - thin re-export, see ltrain.runs
    """Rebuild (model, datamodule, cfg) of a finished run; see :func:`ltrain.runs.from_run`."""
    from ltrain.runs import from_run as _from_run

    return _from_run(run_dir)
