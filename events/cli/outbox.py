"""`choreo outbox list|show|retry|drop`: quarantined outbox rows in the services' databases
(the logic is in :mod:`events.outbox_admin`; this module parses and prints)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from events.cli.catalogue_view import load_catalogue
from events.cli.errors import DATABASE_ERRORS, CliError, database_unreachable
from events.cli.output import add_output_option, as_indented_json, print_rows
from events.db import Database
from events.encoding import make_codec
from events.outbox_admin import (
    OutboxAdminError,
    Quarantined,
    drop,
    list_rows,
    parse_ref,
    requeue,
    show,
)
from events.settings import PlatformSettings
from events.supervisor import database_urls, load_manifest

T = TypeVar("T")


def _databases(settings: PlatformSettings, service: str | None) -> dict[str, str]:
    urls = database_urls([s.name for s in load_manifest()], settings.var_dir)
    if service is not None:
        if service not in urls:
            known = ", ".join(urls) or "none"
            raise CliError(f"no database for service {service!r} (services with one: {known})")
        return {service: urls[service]}
    return urls


async def _on(service: str, url: str, work: Callable[[Database], Awaitable[T]]) -> T:
    """``work`` on the service's database; CliError naming it when it cannot be used."""
    try:
        db = Database(url)  # raises for a URL SQLAlchemy cannot read
    except DATABASE_ERRORS as exc:
        raise database_unreachable(service, url, exc) from None
    try:
        return await work(db)
    except DATABASE_ERRORS as exc:
        raise database_unreachable(service, url, exc) from None
    finally:
        await db.dispose()


async def _list_all(urls: dict[str, str]) -> list[Quarantined]:
    rows: list[Quarantined] = []
    for service, url in urls.items():
        rows += await _on(service, url, partial(list_rows, service=service))
    return rows


def _refs(settings: PlatformSettings, ids: list[str]) -> dict[str, list[int]]:
    """The ids per service, each service's database known."""
    per_service: dict[str, list[int]] = {}
    try:
        for text in ids:
            service, number = parse_ref(text)
            per_service.setdefault(service, []).append(number)
    except OutboxAdminError as exc:
        raise CliError(str(exc)) from None
    for service in per_service:
        _databases(settings, service)  # raises for an unknown service
    return per_service


def _row_line(s: dict[str, Any]) -> str:
    return (
        f"{s['id']}  {s['event_type']} {s['event_id']}  key {s['key']}  to "
        f"{s['topic']}  {s['size']} bytes  {s['reason'][:120]}"
    )


def _missing(service: str, exc: LookupError) -> CliError:
    ids = ", ".join(f"{service}:{n}" for n in exc.args)
    return CliError(f"no such quarantined row: {ids} (see `choreo outbox list`)")


def outbox_command(args: argparse.Namespace, settings: PlatformSettings) -> int:
    if args.action == "list":
        rows = asyncio.run(_list_all(_databases(settings, args.service)))
        print_rows(args.output, [row.summary() for row in rows], _row_line)
        if args.output != "json":
            print(f"{len(rows)} quarantined row(s)")
        return 0
    if args.action == "retry" and args.all:
        if args.ids:
            raise CliError("give row ids or --all, not both")
        urls = _databases(settings, args.service)
        for service, url in urls.items():
            for old, new in asyncio.run(_on(service, url, lambda db: requeue(db, None))):
                print(f"re-queued {service}:{old} as outbox row {new}")
        return 0
    if not args.ids:
        raise CliError(f"`choreo outbox {args.action}` needs row ids (SERVICE:NUMBER)")
    per_service = _refs(settings, args.ids)
    for service, numbers in per_service.items():
        url = _databases(settings, service)[service]
        try:
            _act(args, settings, service, url, numbers)
        except LookupError as exc:
            raise _missing(service, exc) from None
    return 0


def _act(
    args: argparse.Namespace,
    settings: PlatformSettings,
    service: str,
    url: str,
    numbers: list[int],
) -> None:
    if args.action == "show":
        codec = make_codec(load_catalogue(settings), settings.schema_encoding())
        for n in numbers:
            shown = asyncio.run(_on(service, url, partial(show, row_id=n, codec=codec)))
            row = {**shown, "id": f"{service}:{n}"}
            print_rows(args.output, [row], as_indented_json)
    elif args.action == "retry":
        for old, new in asyncio.run(_on(service, url, lambda db: requeue(db, numbers))):
            print(f"re-queued {service}:{old} as outbox row {new}")
    else:
        n = asyncio.run(_on(service, url, lambda db: drop(db, numbers)))
        print(f"dropped {n} row(s) of {service}")


def register(sub: Any) -> None:
    o = sub.add_parser("outbox", help="outbox rows Kafka refused for good: list, retry, drop")
    # The sub-commands parse as the top level does (one-line errors): same parser class.
    o_sub = o.add_subparsers(dest="action", required=True, parser_class=type(o))
    ls = o_sub.add_parser("list", help="quarantined rows of every service, with the reason")
    ls.add_argument("--service", help="only this service's rows")
    add_output_option(ls)
    show_p = o_sub.add_parser("show", help="one row's envelope, reason and decoded payload")
    show_p.add_argument("ids", nargs="+", metavar="SERVICE:NUMBER")
    add_output_option(show_p)
    retry = o_sub.add_parser("retry", help="put rows back into the outbox to publish again")
    retry.add_argument("ids", nargs="*", metavar="SERVICE:NUMBER")
    retry.add_argument("--all", action="store_true", help="every quarantined row")
    retry.add_argument("--service", help="with --all: only this service's rows")
    drop_p = o_sub.add_parser("drop", help="delete rows for good")
    drop_p.add_argument("ids", nargs="+", metavar="SERVICE:NUMBER")
    for p in (ls, show_p, retry, drop_p):
        p.set_defaults(run=outbox_command)
