"""``choreo topics apply|list``: the catalogue's topics on the broker (create what is missing,
report drift) or listed; :func:`apply_or_fail` is also how ``choreo up`` and ``demo`` apply
them. ``apply`` also grants the catalogue's least-privilege ACLs (``events.acls``) where the
broker has an authorizer (:func:`apply_acls_or_fail`), and reports ACL drift. ``apply
--raise-partitions`` raises a topic's partitions to the catalogue's count and says, once,
what that does to the order of a key's events."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterator
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from events.acls import Acl, desired_acls, parties, principal
from events.catalogue import Replication, TopicSpec
from events.cli.catalogue_view import load_catalogue
from events.cli.errors import BROKER_ERRORS, USAGE, CliError, broker_unreachable
from events.cli.output import add_output_option, print_document, print_rows
from events.kafka import KafkaConnection
from events.settings import PlatformSettings
from events.topics import PARTITIONS_NOT_LOWERED, TopicError, TopicReport, apply_topics

if TYPE_CHECKING:
    from events.acl_admin import AclReport

APPLY_TIMEOUT_S = 60.0  # a broker that accepts connections but never answers still ends

# Printed once when partitions were raised: the default partitioner maps a key by the
# partition count, so the change is exactly where the order of a key's events can break.
ORDERING_NOTE = (
    "key ordering: a key's partition depends on the partition count, so keys now move to "
    "other partitions; a key's events written after the change can be consumed before its "
    "earlier ones still unread on the old partition (a saga step, a projection, a sequenced "
    "consumer's parked events see them out of order). Raise partitions drained: no new "
    "requests, lag and outbox 0 in `choreo status`, `choreo down`, raise, `choreo up` (every "
    f"producer then maps keys by the new count). {PARTITIONS_NOT_LOWERED}."
)


async def apply_bounded(
    kafka: KafkaConnection,
    specs: list[TopicSpec],
    replication: Replication | None = None,
    *,
    raise_partitions: bool = False,
) -> TopicReport:
    """The catalogue's topics on the broker, or TimeoutError after a minute."""
    async with asyncio.timeout(APPLY_TIMEOUT_S):
        return await apply_topics(
            kafka, specs, replication=replication, raise_partitions=raise_partitions
        )


def apply_or_fail(
    kafka: KafkaConnection,
    specs: list[TopicSpec],
    replication: Replication | None = None,
    *,
    raise_partitions: bool = False,
) -> TopicReport:
    """:func:`apply_bounded` with its failures as one-line errors."""
    try:
        return asyncio.run(
            apply_bounded(kafka, specs, replication, raise_partitions=raise_partitions)
        )
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
        if args.raise_partitions:
            raise CliError("--raise-partitions goes with `topics apply`", USAGE)
        print_rows(args.output, map(_topic_row, specs), _topic_line)
        return 0
    kafka = settings.kafka_connection()
    report = apply_or_fail(
        kafka, specs, catalogue.replication, raise_partitions=args.raise_partitions
    )
    acls = apply_acls_or_fail(kafka, specs, settings.topic_prefix)
    doc: dict[str, Any] = {
        "created": report.created,
        "unchanged": report.unchanged,
        "differences": report.differences,
        "acls": _acl_doc(acls),
    }
    if args.raise_partitions:  # without the flag the document stays as it was
        doc["raised"] = report.raised
    if report.raised:
        doc["note"] = ORDERING_NOTE
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
    yield from (f"raised    {change}" for change in doc.get("raised", ()))
    yield from (f"DIFFERS   {diff}" for diff in doc["differences"])
    if doc.get("note"):
        yield f"note: {doc['note']}"
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
    topics.add_argument(
        "--raise-partitions",
        action="store_true",
        help="apply: raise a topic's partitions to the catalogue's count (moves keys; "
        "never lowers)",
    )
    add_output_option(topics)
    topics.set_defaults(run=topics_command)
