"""``choreo schemas check|release``: the contract catalogue's compatibility gate (CI runs
``check``) and recording the current versions as released (:mod:`events.compat` does both).

With ``SCHEMA_FORMAT=registry`` (or ``--registry URL``), ``release`` also registers every
version with the schema registry under its TopicRecordNameStrategy subject and sets the
subjects to BACKWARD, so the registry refuses what the gate refuses
(:mod:`events.schema_registry`)."""

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
        url = args.registry or (
            settings.schema_registry_url if settings.schema_format == "registry" else None
        )
        if url:
            _register(root, settings, url)
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


def _register(root: Path, settings: PlatformSettings, url: str) -> None:
    from events.catalogue import Catalogue, CatalogueError
    from events.schema_registry import RegistryError, RegistryUnavailable, register_catalogue

    try:
        catalogue = Catalogue.load(root).prefixed(settings.topic_prefix)
        lines = register_catalogue(catalogue, url)
    except (RegistryError, RegistryUnavailable, CatalogueError) as exc:
        raise CliError(f"cannot register with the schema registry: {exc}") from None
    for line in lines:
        print(f"registry  {line}")


def register(sub: Any) -> None:
    schemas = sub.add_parser("schemas", help="check contracts for backward compatibility")
    schemas.add_argument("action", choices=["check", "release"])
    schemas.add_argument("--root", help="catalogue root (default: the project's schemas/)")
    schemas.add_argument(
        "--registry",
        metavar="URL",
        help="release: also register with the schema registry at URL (its Confluent-"
        "compatible API; default with SCHEMA_FORMAT=registry: SCHEMA_REGISTRY_URL)",
    )
    add_output_option(schemas)
    schemas.set_defaults(run=schemas_command)
