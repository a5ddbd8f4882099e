"""What every ltrain CLI shares: the packaged config dir and clean exits on bad input."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

import ltrain.config  # noqa: F401  (registers ltrain's config resolvers before Hydra composes)
from ltrain.errors import LtrainError, close_matches
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


def override_typos(args: list[str], config_name: str) -> list[str]:
    """'Did you mean' messages for command-line overrides that name no config group, group option or key.

    Hydra's own answer to ``optimzer=adam`` or ``model.hiden=[8]`` is "use +key" (which would ADD the typo to
    the config); this names the close matches instead (difflib). Appending overrides (``+key``), deletions and
    ``hydra.*`` are left to Hydra; sweeps (``a,b``) are checked option by option.
    """
    from hydra import compose, initialize_config_dir
    from omegaconf import DictConfig, OmegaConf

    conf = conf_dir()
    groups = sorted(  # nested groups too: callbacks/progress_bar
        p.relative_to(conf).as_posix()
        for p in conf.rglob("*")
        if p.is_dir() and p.relative_to(conf).parts[0] != "hydra"
    )
    overrides = [a for a in args if "=" in a and not a.startswith(("-", "+", "~", "hydra.", "hydra/"))]
    problems, selections = [], []
    for override in overrides:
        key, value = override.split("=", 1)
        if key in groups:
            options = sorted(p.stem for p in (conf / key).glob("*.yaml"))
            for choice in value.split(",") if "(" not in value else []:
                if choice not in (*options, "null"):
                    hint = close_matches(choice, options)
                    problems.append(
                        f"{key}={choice}: no such option of the config group {key}."
                        + (f" Did you mean {key}={hint[0]}?" if hint else "")
                        + f" Options: {', '.join(options)}"
                    )
            selections.append(f"{key}={value.split(',')[0]}")
    if problems:
        return problems
    try:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            cfg = compose(config_name, overrides=selections)
    except Exception:  # let Hydra report what it cannot compose
        return []
    for override in overrides:
        key = override.split("=", 1)[0]
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
        siblings = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []  # noqa: SIM118 (keeps ??? keys)
        if key in groups or leaf in siblings or (parent and not isinstance(node, DictConfig)):
            continue
        choices = siblings + ([g for g in groups if "/" not in g] if not parent else [])
        hint = close_matches(leaf, choices)
        problems.append(
            f"{key}: no such config key."
            + (f" Did you mean {'.'.join(filter(None, [parent, hint[0]]))}?" if hint else "")
            + f" (To add a new key on purpose: +{key}=...; see the keys with: --cfg job)"
        )
    return problems


def exit_on_override_typos(config_name: str) -> None:
    """Print :func:`override_typos`'s messages and exit 2 if there are any (before Hydra starts)."""
    problems = override_typos(sys.argv[1:], config_name)
    if problems:
        for line in problems:
            print(f"ltrain: error: {line}", file=sys.stderr)
        sys.exit(2)
