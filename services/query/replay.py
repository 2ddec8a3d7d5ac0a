"""``python -m services.query.replay PROJECTION [--verify]``: rebuild a read projection.

The rebuild fills a new generation of the projection's tables from the beginning of its
topics beside the live one (which keeps serving), then switches to it in one update; the
running query service follows the switch by itself. A progress line goes to stderr, a
summary to stdout. ``--verify`` rebuilds without switching and prints how the rebuild
differs from the live generation at the same offsets (it needs the query service running,
so that the live generation keeps up); exit status 1 when it differs.

Exit status: 0 done (or no differences), 1 differences, 2 bad usage or an error.
Settings are the query service's (``KAFKA_BOOTSTRAP_SERVERS``, ``DATABASE_URL``,
``TOPIC_PREFIX``, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from typing import TextIO

from aiokafka.errors import KafkaError
from sqlalchemy.exc import SQLAlchemyError

from events.catalogue import Catalogue
from events.encoding import make_codec
from events.reading import tune_gc
from events.replay import Progress, ReplayReport, replay
from events.replay_readers import ReaderError, default_readers
from events.settings import PlatformSettings, settings_error
from events.tables import metadata as platform_metadata
from events.topics import TopicError
from events.unreachable import database_unreachable
from services.query.app import Settings
from services.query.projections import PROJECTIONS
from services.query.store import open_database

# Events per transaction. Larger than the live runner's batches: one order's events lie on
# five topics, so a batch rewrites most of its orders' rows; bigger batches rewrite fewer
# rows per event (about a fifth less SQLite work than 5,000 on the benchmark's mix).
BATCH = 20_000


class ProgressLine:
    """One line on stderr: rewritten in place on a terminal, else a line every few seconds."""

    def __init__(self, stream: TextIO, name: str) -> None:
        self.stream = stream
        self.name = name
        self.tty = stream.isatty()
        self.every_s = 0.25 if self.tty else 5.0
        self.last = 0.0
        self.shown = False

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s and p.events < p.total:
            return
        self.last = now
        eta = "-" if p.eta_s is None else f"{p.eta_s:,.0f}s"
        line = (
            f"{self.name} {p.phase}: {p.events:,}/{p.total:,} events  "
            f"{p.rate:,.0f} events/s  ETA {eta}"
        )
        if self.tty:
            self.stream.write(f"\r\x1b[2K{line}")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.shown = True

    def end(self) -> None:
        if self.tty and self.shown:
            self.stream.write("\n")
            self.stream.flush()


def summary(report: ReplayReport) -> list[str]:
    took = f"{report.events:,} events in {report.seconds:.1f}s ({report.rate:,.0f} events/s)"
    skipped = f"; {report.undecodable:,} undecodable skipped" if report.undecodable else ""
    if report.differences is None:
        return [
            f"{report.projection}: rebuilt generation {report.generation} from {took}, "
            f"now serving it{skipped}"
        ]
    if not report.differences:
        return [f"{report.projection}: verify: a rebuild from {took} matches the live one{skipped}"]
    lines = [
        f"{report.projection}: verify: {len(report.differences)} difference(s) between the "
        f"live generation and a rebuild from {took}:"
    ]
    return lines + [f"  {d}" for d in report.differences]


async def rebuild(
    name: str,
    settings: PlatformSettings,
    database_url: str,
    *,
    verify: bool,
    batch: int,
    readers: int,
    on_progress: Callable[[Progress], None] | None = None,
) -> ReplayReport:
    """Replays the projection ``name`` into the query database at ``database_url`` (the
    ``choreo replay`` command passes the query service's URL and its progress renderer;
    this module's main, its own URL, and progress is a :class:`ProgressLine`)."""
    projection = PROJECTIONS[name](settings.topic_prefix)
    catalogue = Catalogue.load(settings.schemas_dir).prefixed(settings.topic_prefix)
    db = open_database(database_url)
    progress = ProgressLine(sys.stderr, name) if on_progress is None else on_progress
    try:
        await db.create_all(platform_metadata)
        return await replay(
            projection,
            db,
            make_codec(catalogue, settings.schema_encoding()),
            settings.kafka_connection(),
            verify=verify,
            on_progress=progress,
            batch=batch,
            readers=readers,
        )
    finally:
        if isinstance(progress, ProgressLine):
            progress.end()
        await db.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.query.replay",
        description="Rebuild a read projection from its topics without taking reads down.",
    )
    parser.add_argument("projection", help=f"one of: {', '.join(sorted(PROJECTIONS))}")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="rebuild beside the live generation, print differences, do not switch",
    )
    parser.add_argument(
        "--batch", type=int, default=BATCH, help=f"events per transaction (default {BATCH:,})"
    )
    parser.add_argument(
        "--readers",
        type=int,
        default=default_readers(),
        metavar="N",
        help="reader processes that read, decode and collect the rebuild while this one "
        f"writes; 0 for none (default here: {default_readers()})",
    )
    args = parser.parse_args(argv)
    if args.projection not in PROJECTIONS:
        known = ", ".join(sorted(PROJECTIONS))
        print(f"unknown projection {args.projection!r}; known: {known}", file=sys.stderr)
        return 2
    if args.batch < 1:
        print("--batch must be at least 1", file=sys.stderr)
        return 2
    if args.readers < 0:
        print("--readers must be 0 or more", file=sys.stderr)
        return 2
    try:
        settings = Settings()
    except Exception as exc:
        print(f"replay: bad setting {settings_error(exc)}", file=sys.stderr)
        return 2
    tune_gc()
    try:
        report = asyncio.run(
            rebuild(
                args.projection,
                settings,
                settings.database_url_for("query"),
                verify=args.verify,
                batch=args.batch,
                readers=args.readers,
            )
        )
    except TimeoutError as exc:
        print(f"{args.projection}: {exc} (is the query service running?)", file=sys.stderr)
        return 2
    except (TopicError, KafkaError, OSError, ReaderError) as exc:
        print(f"{args.projection}: cannot replay: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:  # the query database cannot be opened or reached
        url = settings.database_url_for("query")
        print(f"{args.projection}: {database_unreachable('query', url, exc)}", file=sys.stderr)
        return 2
    for line in summary(report):
        print(line)
    return 1 if report.differences else 0


if __name__ == "__main__":
    sys.exit(main())
