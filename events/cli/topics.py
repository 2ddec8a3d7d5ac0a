"""``choreo topics apply|list``: the catalogue's topics on the broker (create what is missing,
report drift) or listed; :func:`apply_or_fail` is also how ``choreo up`` and ``demo`` apply
them."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterator
from typing import Any

from events.catalogue import TopicSpec
from events.cli.catalogue_view import load_catalogue
from events.cli.errors import BROKER_ERRORS, CliError, broker_unreachable
from events.cli.output import add_output_option, print_document, print_rows
from events.kafka import KafkaConnection
from events.settings import PlatformSettings
from events.topics import TopicError, TopicReport, apply_topics

APPLY_TIMEOUT_S = 60.0  # a broker that accepts connections but never answers still ends


async def apply_bounded(kafka: KafkaConnection, specs: list[TopicSpec]) -> TopicReport:
    """The catalogue's topics on the broker, or TimeoutError after a minute."""
    async with asyncio.timeout(APPLY_TIMEOUT_S):
        return await apply_topics(kafka, specs)


def apply_or_fail(kafka: KafkaConnection, specs: list[TopicSpec]) -> TopicReport:
    """:func:`apply_bounded` with its failures as one-line errors."""
    try:
        return asyncio.run(apply_bounded(kafka, specs))
    except TopicError as exc:
        raise CliError(f"topics apply: {exc}") from None
    except BROKER_ERRORS as exc:
        raise broker_unreachable(kafka, exc) from None


def topics_command(args: argparse.Namespace, settings: PlatformSettings) -> int:
    specs = list(load_catalogue(settings).topics.values())
    if args.action == "list":
        print_rows(args.output, map(_topic_row, specs), _topic_line)
        return 0
    report = apply_or_fail(settings.kafka_connection(), specs)
    doc = {
        "created": report.created,
        "unchanged": report.unchanged,
        "differences": report.differences,
    }
    print_document(args.output, doc, _report_lines)
    return 1 if report.differences else 0


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


def _report_lines(doc: dict[str, list[str]]) -> Iterator[str]:
    yield from (f"created   {name}" for name in doc["created"])
    yield from (f"ok        {name}" for name in doc["unchanged"])
    yield from (f"DIFFERS   {diff}" for diff in doc["differences"])


def register(sub: Any) -> None:
    topics = sub.add_parser("topics", help="create the catalogue's topics, report drift")
    topics.add_argument("action", choices=["apply", "list"])
    add_output_option(topics)
    topics.set_defaults(run=topics_command)
