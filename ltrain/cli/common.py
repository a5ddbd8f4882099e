"""What every ltrain CLI shares: the packaged config dir and clean exits on bad input."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

import ltrain.config  # noqa: F401  (registers ltrain's config resolvers before Hydra composes)
from ltrain.errors import LtrainError
from ltrain.paths import conf_dir

CONFIG_PATH = str(conf_dir())


def exit_on_user_error(fn: Callable) -> Callable:
    """Print an LtrainError as one clear message and exit 2, instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from hydra.errors import InstantiationException

        try:
            return fn(*args, **kwargs)
        except LtrainError as e:
            print(f"ltrain: error: {e}", file=sys.stderr)
            sys.exit(2)
        except InstantiationException as e:  # a config value the target class refused (wrong type, bad name)
            print(f"ltrain: error: bad config value: {e}\n  Check the value with: ltrain --cfg job", file=sys.stderr)
            sys.exit(2)

    return wrapper
