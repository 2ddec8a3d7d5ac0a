"""``choreo schemas check|release``: the contract catalogue's compatibility gate (CI runs
``check``) and recording the current versions as released (:mod:`events.compat` does both)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from events.cli.errors import CliError
from events.cli.output import add_output_option, print_rows
from events.settings import PlatformSettings


def schemas_command(args: argparse.Namespace, settings: PlatformSettings) -> int:
    from events.compat import CatalogueError, check_catalogue, write_lock

    root = Path(args.root) if args.root else settings.schemas_dir
    if not root.is_dir():
        raise CliError(f"schemas root {root} is not a directory")
    if args.action == "release":
        try:
            added = write_lock(root)
        except CatalogueError as exc:
            raise CliError(f"cannot release: {exc}") from None
        for line in added:
            print(f"released  {line}")
        if not added:
            print("nothing new to release")
        return 0
    problems = check_catalogue(root)
    rows = [{"path": p.path, "message": p.message} for p in problems]
    print_rows(args.output, rows, lambda row: f"{row['path']}: {row['message']}")
    if problems:
        print(f"{len(problems)} problem(s) in {root}", file=sys.stderr)
        return 1
    if args.output != "json":  # JSON lists the problems only: none is an empty listing
        print(f"schemas ok: {root}")
    return 0


def register(sub: Any) -> None:
    schemas = sub.add_parser("schemas", help="check contracts for backward compatibility")
    schemas.add_argument("action", choices=["check", "release"])
    schemas.add_argument("--root", help="catalogue root (default: the project's schemas/)")
    add_output_option(schemas)
    schemas.set_defaults(run=schemas_command)
