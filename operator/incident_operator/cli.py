"""The `incident-operator` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import crd


def _crds(args: argparse.Namespace) -> int:
    if args.write is None:
        sys.stdout.write(crd.render_all())
        return 0
    args.write.mkdir(parents=True, exist_ok=True)
    for name, definition in crd.file_names().items():
        (args.write / name).write_text(crd.render(definition))
        print(f"wrote {args.write / name}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="incident-operator",
        description="Automated, auditable incident response on Kubernetes.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    crds = commands.add_parser("crds", help="print the CustomResourceDefinitions")
    crds.add_argument(
        "--write", type=Path, metavar="DIR", help="write one file per CRD into DIR instead"
    )
    crds.set_defaults(handler=_crds)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
