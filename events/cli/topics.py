"""``choreo topics apply|list``: the catalogue's topics on the broker (create what is missing,
report drift) or listed; :func:`apply_or_fail` is also how ``choreo up`` and ``demo`` apply
them. ``apply`` also grants the catalogue's least-privilege ACLs (``events.acls``) where the
broker has an authorizer (:func:`apply_acls_or_fail`), and reports ACL drift."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterator
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from events.acls import Acl, desired_acls, parties, principal
from events.catalogue import Replication, TopicSpec
from events.cli.catalogue_view import load_catalogue
from events.cli.errors import BROKER_ERRORS, CliError, broker_unreachable
from events.cli.output import add_output_option, print_document, print_rows
from events.kafka import KafkaConnection
from events.settings import PlatformSettings
from events.topics import TopicError, TopicReport, apply_topics

if TYPE_CHECKING:
    from events.acl_admin import AclReport

APPLY_TIMEOUT_S = 60.0  # a broker that accepts connections but never answers still ends


async def apply_bounded(
    kafka: KafkaConnection, specs: list[TopicSpec], replication: Replication | None = None
) -> TopicReport:
    """The catalogue's topics on the broker, or TimeoutError after a minute."""
    async with asyncio.timeout(APPLY_TIMEOUT_S):
        return await apply_topics(kafka, specs, replication=replication)


def apply_or_fail(
    kafka: KafkaConnection, specs: list[TopicSpec], replication: Replication | None = None
) -> TopicReport:
    """:func:`apply_bounded` with its failures as one-line errors."""
    try:
        return asyncio.run(apply_bounded(kafka, specs, replication))
    except TopicError as exc:
        raise CliError(f"topics apply: {exc}") from None
    except BROKER_ERRORS as exc:
        raise broker_unreachable(kafka, exc) from None


def apply_acls_or_fail(kafka: KafkaConnection, specs: list[TopicSpec], prefix: str) -> AclReport:
    """The ACLs the catalogue's topics call for (``specs`` as prefixed with ``prefix``) on
    the broker; its failures as one-line errors. A broker without an authorizer is left
    alone (the report says so)."""
    # Imported when needed: confluent-kafka's bindings would add ~10 ms to every command.
    from events.acl_admin import AclError, apply_acls

    wanted = desired_acls(specs, prefix)
    principals = {principal(name) for name in parties(specs)}
    try:
        return apply_acls(kafka, wanted, principals, prefix=prefix)
    except AclError as exc:
        raise CliError(f"topics apply: ACLs: {exc}") from None


def topics_command(args: argparse.Namespace, settings: PlatformSettings) -> int:
    catalogue = load_catalogue(settings)
    specs = list(catalogue.topics.values())
    if args.action == "list":
        print_rows(args.output, map(_topic_row, specs), _topic_line)
        return 0
    kafka = settings.kafka_connection()
    report = apply_or_fail(kafka, specs, catalogue.replication)
    acls = apply_acls_or_fail(kafka, specs, settings.topic_prefix)
    doc = {
        "created": report.created,
        "unchanged": report.unchanged,
        "differences": report.differences,
        "acls": _acl_doc(acls),
    }
    print_document(args.output, doc, _report_lines)
    return 1 if report.differences or acls.extra else 0


def _acl_doc(report: AclReport) -> dict[str, Any]:
    def rows(acls: list[Acl]) -> list[dict[str, str]]:
        return [asdict(acl) for acl in acls]

    return {
        "authorizer": report.authorizer,
        "created": rows(report.created),
        "unchanged": rows(report.unchanged),
        "extra": rows(report.extra),
    }


def _topic_row(spec: TopicSpec) -> dict[str, Any]:
    return {
        "topic": spec.name,
        "partitions": spec.partitions,
        "retention_ms": spec.retention_ms,
        "event_types": list(spec.event_types),
        "configs": dict(spec.configs),
    }


def _topic_line(row: dict[str, Any]) -> str:
    return f"{row['topic']}\t{row['partitions']} partitions\t{', '.join(row['event_types'])}"


def _report_lines(doc: dict[str, Any]) -> Iterator[str]:
    yield from (f"created   {name}" for name in doc["created"])
    yield from (f"ok        {name}" for name in doc["unchanged"])
    yield from (f"DIFFERS   {diff}" for diff in doc["differences"])
    acls = doc["acls"]
    if not acls["authorizer"]:
        yield "ACLs: broker has no authorizer (skipped)"
        return
    yield from (f"missing   ACL {Acl(**row)} (created)" for row in acls["created"])
    if acls["unchanged"]:
        yield f"ok        {len(acls['unchanged'])} ACLs"
    yield from (f"EXTRA     ACL {Acl(**row)} (not in the catalogue)" for row in acls["extra"])


def register(sub: Any) -> None:
    topics = sub.add_parser("topics", help="create the catalogue's topics, report drift")
    topics.add_argument("action", choices=["apply", "list"])
    add_output_option(topics)
    topics.set_defaults(run=topics_command)
