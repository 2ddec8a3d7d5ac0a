"""``python -m bench.replay``: rebuilding the query projection against raw aiokafka.

Before the timed runs (untimed): a fresh prefixed topic set (the catalogue's topics, 3
partitions each) is filled with N saga events, a realistic mix of the saga's paths (success,
out of stock, declined payment, unserviceable address, customer cancel) plus seeding deposits
and restocks, with full envelopes (correlation, causation, traceparent), encoded up front and
sent with a raw producer.

Timed spans, alternated on each repeat (the median counts):

- raw: an aiokafka consumer with the projection reader's settings, assigned every partition
  of the projection's topics from the beginning, ``getmany`` in the replay's batch size (the
  replay command's, 20,000), and
  ``codec.decode`` of every message, until the end offsets are reached (client start inside).
- replay: ``events.replay.replay()`` of the ``query`` projection into a fresh SQLite database
  opened as the replay command opens it (platform tables created untimed), with the
  command's batch size and its default reader processes (one per core, at most 4, or up
  to twice that to take the partitions by number evenly: 3 for 3 partitions on 2 cores;
  they read, decode and collect while the replay's process writes; starting them is timed),
  from the call until it returns with the rebuilt generation switched in. The raw side uses
  as many processes as the replay used readers (``bench.raw_read``, one share of the
  partitions each, spawned inside the span as the readers are), or this process when the
  replay reads in one (``--readers 0``). (Until issue 15 the raw side was always one
  process, against the replay's three on two cores.) An untimed replay before the rounds
  says how many readers the replay uses.

Both run with the garbage-collector settings the query service and replay command use
(``events.reading.tune_gc``).

``--registry``: after the single-object run, the same in the schema registry wire format
(``SCHEMA_FORMAT=registry``; a private schema registry started, the catalogue registered
untimed): the history written registry-framed, the replay's codec resolving ids (once per
reader process), the raw side decoding with fastavro and writer schemas fetched once per id
(``bench.raw_decode``); each format against its own raw figure.

Targets: replay >= 50% of raw and >= 30,000 events/s. ``--profile DIR`` adds one untimed
replay under cProfile. Exit status: 0 when both targets are met, 1 when one is missed, 2 on an
error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from sqlalchemy import func, select

from bench.common import schema_registry, value_decoder
from bench.entry import on_a_broker, progress_for
from bench.profiling import Profiler
from bench.raw_decode import Decoder
from bench.raw_read import read_to_end
from bench.replay_history import History, saga_history
from events.catalogue import Catalogue
from events.codec import AvroCodec
from events.db import sqlite_url
from events.encoding import make_codec
from events.kafka import KafkaConnection
from events.projection_store import ProjectionStore
from events.reading import reader, tune_gc
from events.replay import replay
from events.replay_readers import default_readers
from events.schema_registry import register_catalogue
from events.settings import REPO_ROOT, SchemaEncoding
from events.tables import metadata as platform_metadata
from events.topics import apply_topics, partitions_of
from services.query.projections import build_projection
from services.query.replay import BATCH as REPLAY_BATCH
from services.query.store import open_database
from services.query.tables import ORDERS

DEFAULT_EVENTS = 200_000
DEFAULT_REPEAT = 3
TARGET_RATIO = 0.50
TARGET_RATE = 30_000.0
BATCH = REPLAY_BATCH  # what the replay command uses; the raw loop reads in the same size

# --------------------------------------------------------------------------- Kafka


async def publish_history(bootstrap: str, history: History) -> None:
    """Sends the encoded events with a raw producer, waiting for every ack."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024, acks="all"
    )
    await producer.start()
    try:
        pending = []
        for m in history.messages:
            pending.append(await producer.send(m.topic, m.value, key=m.key, headers=m.headers))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def prepare(
    bootstrap: str, n: int, registry: str | None = None
) -> tuple[str, AvroCodec, History]:
    """A fresh prefixed topic set filled with at least ``n`` saga events (registry-framed,
    the catalogue registered first, with a ``registry`` URL)."""
    prefix = f"bench-{uuid.uuid4().hex[:10]}."
    catalogue = Catalogue.load().prefixed(prefix)
    await apply_topics(
        KafkaConnection(bootstrap), list(catalogue.topics.values()), dead_letters=False
    )
    if registry is None:
        codec = AvroCodec(catalogue)
    else:
        register_catalogue(catalogue, registry)
        codec = make_codec(catalogue, SchemaEncoding("registry", registry))
    history = saga_history(codec, n)
    await publish_history(bootstrap, history)
    history.messages.clear()  # a replaying process does not hold them: neither do the runs
    return prefix, codec, history


async def time_raw_processes(
    bootstrap: str,
    prefix: str,
    topics: list[str],
    total: int,
    processes: int,
    registry: str | None = None,
) -> float:
    """Seconds from spawning ``processes`` of ``bench.raw_read`` (a share of the partitions
    each) until the last exits, having read and decoded every message of the topics."""
    started = time.perf_counter()
    procs = []
    for i in range(processes):
        cmd = [
            "-m", "bench.raw_read", "--bootstrap", bootstrap, "--prefix", prefix,
            "--topics", ",".join(topics), "--share", str(i), "--of", str(processes),
            "--batch", str(BATCH), *(("--registry", registry) if registry else ()),
        ]  # fmt: skip
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable, *cmd, stdout=asyncio.subprocess.PIPE, cwd=REPO_ROOT
            )
        )
    outputs = await asyncio.gather(*(p.communicate() for p in procs))
    elapsed = time.perf_counter() - started
    if any(p.returncode != 0 for p in procs):
        raise RuntimeError(f"a raw reader failed: exits {[p.returncode for p in procs]}")
    decoded = sum(int(out.strip() or 0) for out, _ in outputs)
    if decoded != total:
        raise RuntimeError(f"raw readers read {decoded} events, expected {total}")
    return elapsed


async def time_raw(bootstrap: str, topics: list[str], codec: Decoder, total: int) -> float:
    """Seconds to read and decode every message of the topics with a bare consumer."""
    started = time.perf_counter()
    consumer = reader(KafkaConnection(bootstrap), f"bench-raw-{uuid.uuid4().hex[:8]}")
    await consumer.start()
    try:
        tps = await partitions_of(KafkaConnection(bootstrap), topics)
        decoded = await read_to_end(consumer, tps, codec, BATCH)
    finally:
        await consumer.stop()
    elapsed = time.perf_counter() - started
    if decoded != total:
        raise RuntimeError(f"raw read {decoded} events, expected {total}")
    return elapsed


async def time_replay(
    bootstrap: str, prefix: str, codec: AvroCodec, history: History, path: Path, readers: int
) -> tuple[float, int]:
    """Seconds for ``replay()`` of the query projection into a fresh SQLite file, opened as
    the replay command opens it (the platform tables are created before the clock starts),
    and the reader processes it used."""
    db = open_database(sqlite_url(path))
    await db.create_all(platform_metadata)
    try:
        projection = build_projection(prefix)
        started = time.perf_counter()
        report = await replay(
            projection,
            db,
            codec,
            KafkaConnection(bootstrap),
            batch=BATCH,
            readers=readers,
            drop_grace_s=0,
        )
        elapsed = time.perf_counter() - started
        if report.events != history.events:
            raise RuntimeError(f"replay read {report.events} events, expected {history.events}")
        table = ProjectionStore(projection, db).generation(report.generation)[ORDERS]
        async with db.session() as s:
            query = select(table.c.status, func.count()).group_by(table.c.status)
            got = {str(k): int(n) for k, n in (await s.execute(query)).all()}
        if got != history.statuses:
            raise RuntimeError(f"replayed statuses {got} != published {history.statuses}")
    finally:
        await db.dispose()
    return elapsed, report.readers


# --------------------------------------------------------------------------- runs


@contextlib.contextmanager
def projection_gc() -> Iterator[None]:
    """The collector settings of the query service and replay command, for both sides."""
    before = gc.get_threshold()
    tune_gc()
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


async def run(
    bootstrap: str,
    n: int = DEFAULT_EVENTS,
    *,
    repeat: int = DEFAULT_REPEAT,
    readers: int | None = None,
    workdir: Path | None = None,
    profiler: Profiler | None = None,
    progress: Callable[[str], None] | None = None,
    registry: str | None = None,
) -> dict[str, Any]:
    """Publishes >= n saga events, times raw consume+decode and replay(); returns figures.
    With ``registry`` (a schema registry's URL) the events are registry-framed."""
    say = progress or (lambda _msg: None)
    fmt = "single-object" if registry is None else "registry"
    readers = default_readers() if readers is None else readers
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        say(f"publishing >= {n:,} saga events ({fmt})")
        prefix, codec, history = await prepare(bootstrap, n, registry)
        total = history.events
        topics = build_projection(prefix).topics
        say(f"published {total:,} events ({history.orders:,} orders); warming up")
        stack.enter_context(projection_gc())
        # An untimed replay first: it warms the broker's fetch path and says how many reader
        # processes the replay uses; the raw side then uses as many (one in this process
        # when the replay runs in one).
        _, used = await time_replay(
            bootstrap, prefix, codec, history, workdir / "warm-up.db", readers
        )

        decoder = value_decoder(codec, registry)

        async def raw() -> float:
            if used <= 1:
                return await time_raw(bootstrap, topics, decoder, total)
            return await time_raw_processes(bootstrap, prefix, topics, total, used, registry)

        await raw()
        raw_s: list[float] = []
        replay_s: list[float] = []
        for i in range(repeat):
            order = ("raw", "replay") if i % 2 == 0 else ("replay", "raw")
            for what in order:
                if what == "raw":
                    raw_s.append(await raw())
                else:
                    db_path = workdir / f"replay-{i}.db"
                    took, used = await time_replay(
                        bootstrap, prefix, codec, history, db_path, readers
                    )
                    replay_s.append(took)
            raw_rate, replay_rate = total / raw_s[-1], total / replay_s[-1]
            say(f"{fmt} round {i + 1}/{repeat}: raw {raw_rate:,.0f}/s, replay {replay_rate:,.0f}/s")
        if profiler is not None:
            say("profiling one more replay (untimed)")
            with profiler.profile("replay" if registry is None else "replay-registry"):
                await time_replay(
                    bootstrap, prefix, codec, history, workdir / "profiled.db", readers
                )
    raw_rate = total / statistics.median(raw_s)
    replay_rate = total / statistics.median(replay_s)
    ratio = replay_rate / raw_rate
    return {
        "format": fmt,
        "events": total,
        "orders": history.orders,
        "repeat": repeat,
        "readers": used,
        "raw_rate": raw_rate,
        "replay_rate": replay_rate,
        "ratio": ratio,
        "raw_runs": [total / x for x in raw_s],
        "replay_runs": [total / x for x in replay_s],
        "target_ratio": TARGET_RATIO,
        "target_rate": TARGET_RATE,
        "passed": ratio >= TARGET_RATIO and replay_rate >= TARGET_RATE,
    }


def render(result: dict[str, Any]) -> str:
    def verdict(met: bool) -> str:
        return "PASS" if met else "FAIL"

    ratio_ok = result["ratio"] >= TARGET_RATIO
    rate_ok = result["replay_rate"] >= TARGET_RATE
    return "\n".join(
        [
            f"query projection replay, {result.get('format', 'single-object')}: "
            f"{result['events']:,} saga events ({result['orders']:,} orders), "
            f"median of {result['repeat']}",
            f"  raw aiokafka consume + decode  {result['raw_rate']:>10,.0f} events/s  "
            f"({max(result['readers'], 1)} process(es), as many as the replay's readers; "
            f"runs: {', '.join(f'{x:,.0f}' for x in result['raw_runs'])})",
            f"  replay() into fresh SQLite     {result['replay_rate']:>10,.0f} events/s  "
            f"({result['readers']} reader processes; "
            f"runs: {', '.join(f'{x:,.0f}' for x in result['replay_runs'])})",
            f"  ratio {100 * result['ratio']:.1f}% (target >= {100 * TARGET_RATIO:.0f}%: "
            f"{verdict(ratio_ok)}); replay >= {TARGET_RATE:,.0f}/s: {verdict(rate_ok)}; "
            f"overall: {verdict(result['passed'])}",
        ]
    )


progress = progress_for("bench.replay")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.replay", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS, metavar="N")
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, metavar="R")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="profile one untimed replay")
    parser.add_argument(
        "--readers",
        type=int,
        metavar="N",
        help=f"reader processes for the replay (default: the command's, {default_readers()})",
    )
    parser.add_argument(
        "--registry",
        action="store_true",
        help="also in the schema registry wire format (a private registry started), after "
        'the single-object run; JSON: its figures under "registry"',
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    profiler: Profiler | None = None

    def body(bootstrap: str, broker_pid: int | None, root: Path) -> dict[str, Any]:
        nonlocal profiler
        profiler = Profiler(args.profile.absolute(), broker_pid) if args.profile else None

        def one(registry: str | None, workdir: Path) -> dict[str, Any]:
            workdir.mkdir()
            return asyncio.run(
                run(
                    bootstrap,
                    args.events,
                    repeat=args.repeat,
                    readers=args.readers,
                    workdir=workdir,
                    profiler=profiler,
                    progress=progress,
                    registry=registry,
                )
            )

        result = one(None, root / "single-object")
        if args.registry:
            with schema_registry(root, progress) as url:
                result["registry"] = one(url, root / "registry-format")
        return result

    result = on_a_broker("choreo-bench-replay-", progress, body)
    if result is None:
        return 2
    results = [result, *([result["registry"]] if "registry" in result else [])]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n\n".join(render(r) for r in results))
    if profiler is not None and not args.json:
        for text in profiler.reports.values():
            print(text)
    return 0 if all(r["passed"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
