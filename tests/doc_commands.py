"""The shell commands the documentation shows, read the way a shell would split them.

Two kinds: the lines of every ```bash block (commands a user copies), and the ``$ command`` lines of plain
fenced blocks, followed by the output the doc shows for them. Shared by the test that composes every command
(fast) and the one that runs them all end to end (slow).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
APPS = {"ltrain": "config", "ltrain-predict": "predict", "ltrain-export": "export"}
SEPARATORS = ("&&", ";", "||", "|")


@dataclass
class DocCommand:
    """One command of a doc: where it is, its argv, and the output the doc shows for it (``$`` blocks only)."""

    doc: str
    line: str
    argv: list[str]
    shown_output: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.doc}: {self.line.strip()}"


def _split(line: str) -> list[list[str]] | str:
    """The commands of one shell line (``a && b`` gives two), or the shell's complaint."""
    try:
        argv = shlex.split(line, comments=True)
    except ValueError as e:
        return str(e)
    commands = []
    while argv:
        cut = next((i for i, a in enumerate(argv) if a in SEPARATORS), len(argv))
        if argv[:cut]:
            commands.append(argv[:cut])
        argv = argv[cut + 1 :]
    return commands


def doc_commands(doc: Path) -> list[DocCommand]:
    """Every command of ``doc`` in the order it appears (bash blocks and ``$`` lines alike)."""
    found: list[DocCommand] = []
    for lang, block in re.findall(r"```(\w*)\n(.*?)```", doc.read_text(), flags=re.S):
        lines = block.replace("\\\n", " ").splitlines()
        if lang == "bash":
            for line in lines:
                split = _split(line)
                if isinstance(split, str):
                    found.append(DocCommand(doc.name, line, ["<unparseable>", split]))
                    continue
                found += [DocCommand(doc.name, line, argv) for argv in split]
        elif lang == "" and lines and lines[0].startswith("$ "):
            for line in lines:
                if line.startswith("$ "):
                    split = _split(line[2:])
                    found += [
                        DocCommand(doc.name, line[2:], argv) for argv in (split if isinstance(split, list) else [])
                    ]
                elif found:
                    found[-1].shown_output.append(line)
    return found


def documented_commands() -> list[DocCommand]:
    """Every command of README.md and docs/*.md."""
    return [c for doc in DOCS for c in doc_commands(doc)]
