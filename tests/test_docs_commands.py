"""Every shell command in README.md and docs/*.md composes as written, so the documentation cannot rot silently.

Each ```bash block is split as the shell would split it (shlex). For the Hydra apps (ltrain, ltrain-predict,
ltrain-export) every override must parse, a comma in a value of a single run must be quoted (Hydra reads it as a
sweep), no group, option or key may be misspelt, and the config must compose; ltrain-zoo commands must parse with
its argparse parser; every ``zoo:NAME`` a command loads must be pushed by some documented command.
This checks each command as written, in seconds; tests/test_docs_run.py runs them all end to end (slow).
"""

from __future__ import annotations

import re

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from ltrain.cli.common import override_typos
from ltrain.config import compose_config
from tests.doc_commands import APPS, documented_commands

COMMANDS = [(c.where, c.argv) for c in documented_commands() if c.argv[0] in (*APPS, "ltrain-zoo", "<unparseable>")]


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[w[:90] for w, _ in COMMANDS])
def test_documented_command_composes_as_written(where, argv):
    assert argv[0] != "<unparseable>", f"{where}: the shell cannot split it ({argv[1]})"
    if argv[0] == "ltrain-zoo":
        from ltrain.cli.zoo import build_parser

        build_parser().parse_args(argv[1:])
        return
    args = argv[1:]
    if args[:1] == ["groups"]:
        args = args[1:]
    multirun = any(a in ("-m", "--multirun") for a in args)
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    parsed = OverridesParser.create().parse_overrides(overrides)
    sweeps = [o.input_line for o in parsed if o.is_sweep_override()]
    assert multirun or not sweeps, f"{where}: {sweeps} is read as a sweep: quote a value that holds a comma"
    assert override_typos(args, APPS[argv[0]]) == [], where
    single = [o.input_line for o in parsed if not o.is_sweep_override() and not o.key_or_group.startswith("hydra")]
    compose_config(*single, config_name=APPS[argv[0]])


def test_every_zoo_entry_a_documented_command_loads_is_pushed_by_one():
    pushed, loaded = set(), {}
    for where, argv in COMMANDS:
        text = " ".join(argv)
        pushed |= set(re.findall(r"zoo\.push=([A-Za-z0-9._-]+)", text))
        pushed |= set(re.findall(r"ltrain-zoo push ([A-Za-z0-9._-]+)", text))
        for recipe in re.findall(r"recipe=([a-z0-9_]+)", text):  # a recipe's own entries, seed 0
            pushed |= {f"{recipe}_s0", f"{recipe}_a_s0"}
        for name in re.findall(r"zoo:([A-Za-z0-9._-]+)", text):
            loaded.setdefault(name, where)
    placeholders = {n for n in loaded if n.isupper() or n.startswith("NAME")}
    missing = {n: w for n, w in loaded.items() if n not in pushed | placeholders}
    assert not missing, f"documented commands load zoo entries no documented command creates: {missing}"
