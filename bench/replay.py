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
import logging
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from sqlalchemy import func, select

from bench.profiling import Profiler
from bench.raw_read import read_to_end
from events.catalogue import Catalogue
from events.codec import AvroCodec
from events.db import sqlite_url
from events.envelope import Envelope
from events.projection import ProjectionStore
from events.reading import reader, tune_gc
from events.replay import replay
from events.replay_readers import default_readers
from events.settings import REPO_ROOT
from events.tables import metadata as platform_metadata
from events.topics import apply_topics, partitions_of
from infra.broker import BrokerSpec, down, free_ports, up
from services.query.projections import build_projection
from services.query.replay import BATCH as REPLAY_BATCH
from services.query.store import open_database
from services.query.tables import ORDERS

DEFAULT_EVENTS = 200_000
DEFAULT_REPEAT = 3
TARGET_RATIO = 0.50
TARGET_RATE = 30_000.0
BATCH = REPLAY_BATCH  # what the replay command uses; the raw loop reads in the same size
SKUS = 40
CUSTOMERS = 400
# (path, weight): how often each saga path occurs in the mix.
PATHS = (
    ("success", 70),
    ("out of stock", 10),
    ("insufficient funds", 10),
    ("unserviceable address", 5),
    ("cancelled", 5),
)
ADDRESS = {
    "name": "Ada",
    "line1": "1 Main St",
    "city": "Berlin",
    "postal_code": "1",
    "country": "DE",
}


@dataclass
class Message:
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass
class History:
    """The encoded events and what a correct projection must show for them."""

    messages: list[Message] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    orders: int = 0
    events: int = 0


# Each path's events after OrderCreated: (step, event type, emitting service, cause), the cause
# being the step whose event made the service emit this one.
FLOWS: dict[str, list[tuple[int, str, str, int]]] = {
    "success": [
        (1, "StockReserved", "inventory", 0),
        (2, "PaymentCaptured", "payments", 1),
        (3, "ShipmentScheduled", "shipping", 2),
        (4, "OrderCompleted", "orders", 3),
        (5, "CustomerNotified", "notifications", 4),
    ],
    "out of stock": [
        (1, "StockRejected", "inventory", 0),
        (2, "OrderRejected", "orders", 1),
        (3, "CustomerNotified", "notifications", 2),
    ],
    "insufficient funds": [
        (1, "StockReserved", "inventory", 0),
        (2, "PaymentDeclined", "payments", 1),
        (3, "StockReleased", "inventory", 2),
        (3, "OrderCancelled", "orders", 2),
        (4, "CustomerNotified", "notifications", 4),
    ],
    "unserviceable address": [
        (1, "StockReserved", "inventory", 0),
        (2, "PaymentCaptured", "payments", 1),
        (3, "ShipmentFailed", "shipping", 2),
        (4, "PaymentRefunded", "payments", 3),
        (4, "OrderCancelled", "orders", 3),
        (5, "StockReleased", "inventory", 4),
        (5, "CustomerNotified", "notifications", 5),
    ],
    "cancelled": [
        (1, "StockReserved", "inventory", 0),
        (2, "OrderCancelled", "orders", 1),
        (3, "StockReleased", "inventory", 2),
        (3, "CustomerNotified", "notifications", 2),
    ],
}
STATUS = {
    "success": "COMPLETED",
    "out of stock": "REJECTED",
    "insufficient funds": "CANCELLED",
    "unserviceable address": "CANCELLED",
    "cancelled": "CANCELLED",
}
FAILED_STEP = {"insufficient funds": "payments", "unserviceable address": "shipping"}


class _Writer:
    """Encodes events with envelopes as the services' outboxes write them."""

    def __init__(self, codec: AvroCodec) -> None:
        self.codec = codec
        self.history = History()

    def emit(
        self,
        event_type: str,
        payload: dict[str, Any],
        key: str,
        producer: str,
        at: datetime,
        cause: Envelope | None = None,
        trace: str | None = None,
    ) -> Envelope:
        event_id = str(uuid.uuid4())
        env = Envelope(
            event_id=event_id,
            event_type=event_type,
            schema_version=self.codec.catalogue.latest(event_type).version,
            occurred_at=at,
            producer=producer,
            correlation_id=cause.correlation_id if cause else event_id,
            key=key,
            causation_id=cause.event_id if cause else None,
            traceparent=f"00-{trace}-{uuid.uuid4().hex[:16]}-01" if trace else None,
        )
        topic = self.codec.catalogue.topic_for(event_type)
        value = self.codec.encode(event_type, payload)
        self.history.messages.append(Message(topic, key.encode(), value, env.to_headers()))
        self.history.events += 1
        return env


def saga_history(codec: AvroCodec, n: int, seed: int = 7) -> History:
    """At least ``n`` events: seeding first, then orders overlapping in time."""
    rng = random.Random(seed)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    w = _Writer(codec)
    skus = [f"sku-{i:03d}" for i in range(SKUS)]
    customers = [f"cust-{i:04d}" for i in range(CUSTOMERS)]
    # The owners' facts of the seeding (what the query projection counts), as inventory and
    # payments emit them for the warehouse's and the bank's requests.
    for sku in skus:
        payload = {"restock_id": str(uuid.uuid4()), "sku": sku, "quantity": 10**6}
        times = {"restocked_at": start, "received_at": start}
        w.emit("StockReceived", {**payload, **times}, sku, "inventory", start)
    for cust in customers:
        payload = {"deposit_id": str(uuid.uuid4()), "customer_id": cust, "amount_cents": 10**9}
        times = {"deposited_at": start, "credited_at": start}
        w.emit("FundsCredited", {**payload, **times}, cust, "payments", start)
    paths = [p for p, _ in PATHS]
    weights = [wt for _, wt in PATHS]
    i = 0
    while w.history.events < n:
        at = start + timedelta(milliseconds=10 * i)
        path = rng.choices(paths, weights)[0]
        _order(w, rng, path, rng.choice(customers), rng.sample(skus, rng.randint(1, 3)), at)
        i += 1
    # Orders overlap in time: publish in time order, as the services would have.
    w.history.messages.sort(key=lambda m: dict(m.headers)["occurred-at"])
    return w.history


def _order(
    w: _Writer, rng: random.Random, path: str, cust: str, skus: list[str], at: datetime
) -> None:
    order_id = str(uuid.uuid4())
    trace = uuid.uuid4().hex
    step = timedelta(milliseconds=rng.randint(5, 40))
    quantities = [rng.randint(1, 3) for _ in skus]
    lines = [
        {"sku": s, "quantity": q, "unit_price_cents": 250}
        for s, q in zip(skus, quantities, strict=True)
    ]
    total = 250 * sum(quantities)
    status = STATUS[path]
    facts = {
        "lines": lines,
        "stock_lines": [{"sku": ln["sku"], "quantity": ln["quantity"]} for ln in lines],
        "total": total,
        "status": status,
        "failed_step": FAILED_STEP.get(path),
        "payment_id": str(uuid.uuid4()),
        "shipment_id": str(uuid.uuid4()),
    }
    created = {"lines": lines, "total_cents": total, "shipping_address": ADDRESS, "created_at": at}
    base = {"order_id": order_id, "customer_id": cust}
    sent = [w.emit("OrderCreated", {**base, **created}, order_id, "orders", at, None, trace)]
    for k, event_type, producer, cause in FLOWS[path]:
        when = at + k * step
        payload = {**base, **_payload(event_type, facts, when)}
        sent.append(w.emit(event_type, payload, order_id, producer, when, sent[cause], trace))
    w.history.orders += 1
    w.history.statuses[status] = w.history.statuses.get(status, 0) + 1


def _payload(event_type: str, f: dict[str, Any], at: datetime) -> dict[str, Any]:
    """The fields of a saga event beyond order_id and customer_id."""
    reason = "insufficient funds" if f["failed_step"] == "payments" else "address not serviceable"
    if f["failed_step"] is None:
        reason = "changed my mind"
    short = {"sku": f["lines"][0]["sku"], "requested": 1, "available": 0}
    body: dict[str, dict[str, Any]] = {
        "StockReserved": {
            "lines": f["stock_lines"],
            "total_cents": f["total"],
            "shipping_address": ADDRESS,
            "reserved_at": at,
        },
        "StockRejected": {"reason": "out of stock", "shortages": [short], "rejected_at": at},
        "StockReleased": {
            "lines": f["stock_lines"],
            "reason": reason,
            "failed_step": f["failed_step"],
            "released_at": at,
        },
        "PaymentCaptured": {
            "payment_id": f["payment_id"],
            "amount_cents": f["total"],
            "shipping_address": ADDRESS,
            "captured_at": at,
        },
        "PaymentDeclined": {
            "amount_cents": f["total"],
            "reason": reason,
            "balance_cents": 0,
            "declined_at": at,
        },
        "PaymentRefunded": {
            "payment_id": f["payment_id"],
            "amount_cents": f["total"],
            "reason": reason,
            "failed_step": f["failed_step"],
            "refunded_at": at,
        },
        "ShipmentScheduled": {
            "shipment_id": f["shipment_id"],
            "carrier": "DHL",
            "shipping_address": ADDRESS,
            "scheduled_at": at,
        },
        "ShipmentFailed": {"reason": reason, "failed_at": at},
        "OrderCompleted": {
            "total_cents": f["total"],
            "shipment_id": f["shipment_id"],
            "completed_at": at,
        },
        "OrderRejected": {"reason": "out of stock", "failed_step": "inventory", "rejected_at": at},
        "OrderCancelled": {"reason": reason, "failed_step": f["failed_step"], "cancelled_at": at},
        "CustomerNotified": {
            "notification_id": str(uuid.uuid4()),
            "order_status": f["status"],
            "message": f"your order is {f['status'].lower()}",
            "notified_at": at,
        },
    }
    return body[event_type]


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


async def prepare(bootstrap: str, n: int) -> tuple[str, AvroCodec, History]:
    """A fresh prefixed topic set filled with at least ``n`` saga events."""
    prefix = f"bench-{uuid.uuid4().hex[:10]}."
    catalogue = Catalogue.load().prefixed(prefix)
    await apply_topics(bootstrap, list(catalogue.topics.values()), dead_letters=False)
    codec = AvroCodec(catalogue)
    history = saga_history(codec, n)
    await publish_history(bootstrap, history)
    history.messages.clear()  # a replaying process does not hold them: neither do the runs
    return prefix, codec, history


async def time_raw_processes(
    bootstrap: str, prefix: str, topics: list[str], total: int, processes: int
) -> float:
    """Seconds from spawning ``processes`` of ``bench.raw_read`` (a share of the partitions
    each) until the last exits, having read and decoded every message of the topics."""
    started = time.perf_counter()
    procs = []
    for i in range(processes):
        cmd = [
            "-m", "bench.raw_read", "--bootstrap", bootstrap, "--prefix", prefix,
            "--topics", ",".join(topics), "--share", str(i), "--of", str(processes),
            "--batch", str(BATCH),
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


async def time_raw(bootstrap: str, topics: list[str], codec: AvroCodec, total: int) -> float:
    """Seconds to read and decode every message of the topics with a bare consumer."""
    started = time.perf_counter()
    consumer = reader(bootstrap, f"bench-raw-{uuid.uuid4().hex[:8]}")
    await consumer.start()
    try:
        tps = await partitions_of(bootstrap, topics)
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
            projection, db, codec, bootstrap, batch=BATCH, readers=readers, drop_grace_s=0
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
) -> dict[str, Any]:
    """Publishes >= n saga events, times raw consume+decode and replay(); returns figures."""
    say = progress or (lambda _msg: None)
    readers = default_readers() if readers is None else readers
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        say(f"publishing >= {n:,} saga events")
        prefix, codec, history = await prepare(bootstrap, n)
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

        async def raw() -> float:
            if used <= 1:
                return await time_raw(bootstrap, topics, codec, total)
            return await time_raw_processes(bootstrap, prefix, topics, total, used)

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
            say(f"round {i + 1}/{repeat}: raw {raw_rate:,.0f}/s, replay {replay_rate:,.0f}/s")
        if profiler is not None:
            say("profiling one more replay (untimed)")
            with profiler.profile("replay"):
                await time_replay(
                    bootstrap, prefix, codec, history, workdir / "profiled.db", readers
                )
    raw_rate = total / statistics.median(raw_s)
    replay_rate = total / statistics.median(replay_s)
    ratio = replay_rate / raw_rate
    return {
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
            f"query projection replay: {result['events']:,} saga events "
            f"({result['orders']:,} orders), median of {result['repeat']}",
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


@contextlib.contextmanager
def _kafka(root: Path) -> Iterator[tuple[str, int | None]]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external, None
        return
    port, controller_port = free_ports(2)
    spec = BrokerSpec(home=root / "kafka", port=port, controller_port=controller_port)
    try:
        status = up(spec)
        yield spec.bootstrap, status.pid
    finally:
        down(spec)


def _progress(message: str) -> None:
    print(f"[bench.replay {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


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
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        with tempfile.TemporaryDirectory(prefix="choreo-bench-replay-") as tmp:
            root = Path(tmp)
            with _kafka(root) as (bootstrap, broker_pid):
                profiler = Profiler(args.profile.absolute(), broker_pid) if args.profile else None
                result = asyncio.run(
                    run(
                        bootstrap,
                        args.events,
                        repeat=args.repeat,
                        readers=args.readers,
                        workdir=root,
                        profiler=profiler,
                        progress=_progress,
                    )
                )
    except Exception as exc:  # the report names the failure instead of a traceback wall
        logging.getLogger("bench").exception("benchmark failed: %s", exc)
        return 2
    print(json.dumps(result, indent=2) if args.json else render(result))
    if profiler is not None and not args.json:
        for text in profiler.reports.values():
            print(text)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
