"""``choreo replay PROJECTION [--verify] [--readers N]``: rebuild one of the query service's
projections beside the live one, then switch (or, with ``--verify``, compare and keep the
live one). It runs :func:`services.query.replay.rebuild` in this process on the query
service's database (``QUERY_DATABASE_URL``, else ``var/query.db``, as ``choreo up`` gives
it), so it lives among the tools that drive services.

Exit statuses: 0 done (or no differences), 1 differences found by ``--verify``, 2 the
replay could not run (as the query service's own replay module says, so that a script can
tell differences from a failure)."""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from events import unreachable
from events.cli.errors import BROKER_ERRORS, DATABASE_ERRORS, USAGE, CliError
from events.cli.progress import Meter
from events.settings import PlatformSettings
from events.supervisor import database_url
from events.topics import TopicError

if TYPE_CHECKING:  # the replay runtime is imported when the command runs, not by every command
    from events.replay import Progress

DIFFERENCES = 1
FAILED = 2


class PhaseMeters:
    """The replay's progress reports drawn by the command line's one progress renderer
    (:class:`events.cli.progress.Meter`), a meter per phase (rebuild, catch-up, verify).
    Reports come after every fetched chunk, so they are drawn at most every
    ``Meter.every_s``, and the last of a phase on a terminal."""

    def __init__(self, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.name, self.clock = name, clock
        self.meter: Meter | None = None
        self.phase = ""
        self.next_at = 0.0

    def __call__(self, p: Progress) -> None:
        if self.meter is None or p.phase != self.phase:
            self.finish()
            self.meter, self.phase = Meter(f"{self.name} {p.phase}", p.total), p.phase
            self.next_at = self.clock() + self.meter.every_s
        now = self.clock()
        if now >= self.next_at or (self.meter.tty and p.events >= p.total):
            self.next_at = now + self.meter.every_s
            self.meter.show(p.events, p.events)

    def finish(self) -> None:
        if self.meter is not None:
            self.meter.finish()
            self.meter = None


def replay_command(args: argparse.Namespace, settings: PlatformSettings) -> int:
    # Imported when run: the query service's modules (its store, SQLAlchemy's tables) cost
    # every other command's start-up time.
    from events.replay_readers import ReaderError, default_readers
    from services.query.projections import PROJECTIONS
    from services.query.replay import BATCH, rebuild, summary

    name = args.projection
    if name not in PROJECTIONS:
        known = ", ".join(sorted(PROJECTIONS))
        raise CliError(f"unknown projection {name!r}; known: {known}", USAGE)
    readers = default_readers() if args.readers is None else args.readers
    if readers < 0:
        raise CliError("--readers must be 0 or more", USAGE)
    url = database_url("query", settings.var_dir, os.environ)
    kafka = settings.kafka_connection()
    progress = PhaseMeters(name)
    try:
        report = asyncio.run(
            rebuild(
                name,
                settings,
                url,
                verify=args.verify,
                batch=BATCH,
                readers=readers,
                on_progress=progress,
            )
        )
    # The replay's own deadline (the live generation not catching up) before the broker's.
    except TimeoutError as exc:
        raise CliError(f"{name}: {exc} (is the query service running?)", FAILED) from None
    except (TopicError, ReaderError) as exc:
        raise CliError(f"{name}: cannot replay: {exc}", FAILED) from None
    except DATABASE_ERRORS as exc:
        raise CliError(unreachable.database_unreachable("query", url, exc), FAILED) from None
    except BROKER_ERRORS as exc:
        raise CliError(unreachable.broker_unreachable(kafka, exc), FAILED) from None
    finally:
        progress.finish()
    for line in summary(report):
        print(line)
    return DIFFERENCES if report.differences else 0


def register(sub: Any) -> None:
    replay = sub.add_parser("replay", help="rebuild a projection beside the live one, then switch")
    replay.add_argument("projection", help="projection name (the query service's: query)")
    replay.add_argument(
        "--verify",
        action="store_true",
        help="rebuild to the side and report differences; do not switch",
    )
    replay.add_argument(
        "--readers",
        type=int,
        metavar="N",
        help="reader processes that decode while the replay writes (0: none; "
        "default: one per core, at most 4)",
    )
    replay.set_defaults(run=replay_command)
