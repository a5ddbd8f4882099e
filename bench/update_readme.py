"""Put generated tables into README.md between markers, so no published figure is typed by hand.

    python bench/update_readme.py NAME path/to/report.md [NAME2 path2 ...]

replaces the text between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->`` with the file's
contents (a report.md from ltrain-report, or a table a bench script wrote).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def replace_block(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- generated:{re.escape(name)} -->\n).*?(<!-- /generated:{re.escape(name)} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no <!-- generated:{name} --> block")
    return pattern.sub(lambda m: m.group(1) + body.strip() + "\n" + m.group(2), text)


def main(argv: list[str]) -> None:
    if len(argv) % 2:
        raise SystemExit(__doc__)
    text = README.read_text()
    for name, path in zip(argv[::2], argv[1::2], strict=True):
        text = replace_block(text, name, Path(path).read_text())
    README.write_text(text)


if __name__ == "__main__":
    main(sys.argv[1:])
