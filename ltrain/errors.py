"""One exception type for bad user input, so the CLIs can print it without a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LtrainError(ValueError):
    """A bad input the user can fix; the message says what to do."""


def close_matches(word: str, choices: Iterable[str], n: int = 5) -> list[str]:
    """Names in ``choices`` that look like ``word`` (for 'did you mean' hints)."""
    choices = list(choices)
    found = difflib.get_close_matches(word, choices, n=n, cutoff=0.6)
    if not found:  # fall back to a substring match (e.g. 'resnet_18x' -> 'resnet18')
        stem = "".join(ch for ch in word.lower() if ch.isalnum())[:6]
        found = [c for c in choices if stem and stem in c.replace("_", "")][:n]
    return found


def instantiate(config, **kwargs):
    """``hydra.utils.instantiate``, except that an LtrainError raised by the target comes out as itself.

    Hydra wraps every exception of a target in an InstantiationException; a user's mistake (a bad
    ``data.classes``) should reach them as the clear LtrainError it is.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    try:
        return hydra_instantiate(config, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        while cause is not None and not isinstance(cause, LtrainError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None
