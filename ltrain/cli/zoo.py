"""``ltrain-zoo``: the model catalogue from the shell — list, show, push (a finished run), verify, rm.

A plain argparse tool over :mod:`ltrain.zoo` (a catalogue command has no config to compose, so no Hydra).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict

from ltrain.cli.common import exit_on_user_error
from ltrain.errors import LtrainError
from ltrain.zoo import Zoo, ZooEntry


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ltrain-zoo",
        description="Your catalogue of trained models. Entries: $LTRAIN_ZOO_CATALOG (default "
        "$LTRAIN_ZOO_HOME/catalog); weights: $LTRAIN_ZOO_HOME (default ~/.cache/ltrain/zoo).",
    )
    parser.add_argument("--catalog", help="catalogue folder (overrides $LTRAIN_ZOO_CATALOG)")
    parser.add_argument("--home", help="weight store folder (overrides $LTRAIN_ZOO_HOME)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{list,show,push,verify,rm}")

    p = sub.add_parser("list", help="one line per entry")
    p.add_argument("--json", action="store_true", help="print the entries as JSON")
    p = sub.add_parser("show", help="an entry in full, with its lineage and where its weights are")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="print the entry as JSON")
    p = sub.add_parser(
        "push",
        help="add a finished ltrain run (its best checkpoint) to the catalogue",
        description="Push a finished run. During training, `ltrain ... zoo.push=NAME` does the same.",
    )
    p.add_argument("name")
    p.add_argument("--run", required=True, help="the run directory (config.yaml, results.json, checkpoints/)")
    p.add_argument(
        "--more-runs",
        nargs="*",
        default=[],
        help="the same config's runs with other seeds: their metrics join the entry's mean ± std",
    )
    p.add_argument("--description", default="", help="one line for `ltrain-zoo list`")
    p.add_argument("--parent", help="the entry it descends from (default: from model.pretrained=zoo:NAME)")
    p.add_argument("--force", action="store_true", help="replace an existing entry of that name")
    p = sub.add_parser("verify", help="recompute every weight file's sha256 (exit 1 if any is damaged)")
    p.add_argument("name", nargs="?")
    p = sub.add_parser("rm", help="remove an entry and its weights")
    p.add_argument("name")
    return parser


def format_table(entries: Sequence[ZooEntry]) -> str:
    header = ("NAME", "ARCH", "CLASSES", "DATASET", "TEST ACC", "PARENT", "CREATED")
    rows = [header] + [
        (
            e.name,
            e.architecture,
            str(e.num_classes),
            str(e.dataset.get("dataset", "-")),
            e.metric_text("test_acc"),
            e.parent or "-",
            e.created[:19],
        )
        for e in entries
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def show_text(zoo: Zoo, entry: ZooEntry) -> str:
    folder = zoo.folder(entry)
    lines = [
        f"{entry.name}: {entry.architecture}, {entry.num_classes} classes, input {tuple(entry.input_shape)}",
        f"  description: {entry.description or '-'}",
        f"  lineage:     {' <- '.join(zoo.lineage(entry.name))}"
        + (f"  (started from {entry.pretrained})" if entry.pretrained else ""),
        f"  children:    {', '.join(zoo.children(entry.name)) or '-'}",
        f"  dataset:     {entry.dataset.get('dataset', '-')} classes {entry.dataset.get('class_names', '-')}",
        *[f"  {k + ':':12s} {entry.metric_text(k)}" for k in entry.metrics],
        f"  seeds:       {entry.seeds}",
        f"  created:     {entry.created}  versions: {entry.versions}",
        f"  weights:     {folder}",
        *[f"    {f}: {info['size']} bytes, sha256 {info['sha256']}" for f, info in entry.files.items()],
        f"  catalogue:   {zoo.entry_file(entry.name)}",
        f"  load:        ltrain ... model.pretrained=zoo:{entry.name}   |   ltrain.zoo.load_model({entry.name!r})",
    ]
    if entry.architecture != "mlp":
        lines.append(f"  timm:        timm.create_model('local-dir:{folder}', pretrained=True)")
    return "\n".join(lines)


@exit_on_user_error
def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    zoo = Zoo(catalog=args.catalog, home=args.home)
    if args.command == "list":
        entries = []
        for name in zoo.names():  # one unreadable entry file must not hide the others
            try:
                entries.append(zoo.get(name))
            except LtrainError as e:
                print(f"ltrain-zoo: skipping {name}: {e}", file=sys.stderr)
        if args.json:
            print(json.dumps([asdict(e) for e in entries], indent=2))
        elif entries:
            print(format_table(entries))
        else:
            print(f"the catalogue {zoo.catalog} is empty: push with `ltrain ... zoo.push=NAME`")
    elif args.command == "show":
        entry = zoo.get(args.name)
        print(json.dumps(asdict(entry), indent=2) if args.json else show_text(zoo, entry))
    elif args.command == "push":
        from ltrain.publish import push_run

        entry = push_run(
            args.run,
            args.name,
            more_runs=args.more_runs,
            description=args.description,
            parent=args.parent,
            overwrite=args.force,
            zoo=zoo,
        )
        print(
            f"pushed {entry.name} ({entry.architecture}, test acc {entry.metric_text('test_acc')}) "
            f"-> {zoo.folder(entry)}"
        )
    elif args.command == "verify":
        results = zoo.verify(args.name)
        for r in results:
            print(f"ok      {r.name}" if r.ok else f"DAMAGED {r.name}: {'; '.join(r.problems)}")
        if not results:
            print(f"the catalogue {zoo.catalog} is empty")
        return 0 if all(r.ok for r in results) else 1
    elif args.command == "rm":
        children = zoo.children(args.name)
        entry = zoo.rm(args.name)
        if entry is None:
            print(
                f"removed the unreadable entry file of {args.name}; its weights (if any) stay under {zoo.home / 'models'}"
            )
            return 0
        print(
            f"removed {entry.name} and {zoo.home / entry.folder}"
            + (f" (its children {', '.join(children)} keep it as parent, shown as removed)" if children else "")
        )
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(run(argv))


if __name__ == "__main__":
    main()
