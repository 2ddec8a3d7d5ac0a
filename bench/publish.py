"""``choreo publish --file`` throughput against a raw idempotent aiokafka producer.

Setup (untimed): N ``OrderPlaced`` events (one order each, two lines, an address, an ISO 8601
``placed_at``) are written as JSON Lines; the raw producer's values are those same events
validated and encoded by the CLI's own code beforehand, with the same keys and headers.
Every timed run publishes to fresh topics (``TOPIC_PREFIX``-style random prefix, the
catalogue's 3 partitions).

Timed spans (producer start and stop are inside both):

- project: the ``publish`` command itself (``--file FILE --output json``, as ``choreo``
  runs it, in this process): read the file, validate and encode every line, then send
  all with the idempotent producer and wait for every acknowledgement.
- raw: ``reliable_producer(...)`` (idempotent, acks=all, the same linger and batch size),
  started, the pre-encoded values sent with ``await producer.send(...)``, every delivery
  awaited, stopped.
- raw send_batch (context, not the target): the same pre-encoded values through aiokafka's
  batch API (``create_batch``/``send_batch``, one open batch per partition), which is how the
  CLI sends; it shows what the CLI's validation costs against the same sending technique.
- validate-only (explains the gap, not a target): the CLI's validation pass alone.

Run: ``python -m bench.publish [--events N] [--repeat R] [--json]`` (a private broker is
started unless ``KAFKA_BOOTSTRAP_SERVERS`` is set).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from events.catalogue import Catalogue
from events.cli_publish import Preparer, register, topic_partitions, validate_file
from events.codec import AvroCodec
from events.kafka import reliable_producer
from events.settings import PlatformSettings
from events.topics import apply_topics
from infra.broker import BrokerSpec, down, free_port, up

TARGET = 0.50
TOPIC = "orders.requests"
DEFAULT_EVENTS = 100_000
DEFAULT_REPEAT = 3
Record = tuple[str, bytes, bytes, list[tuple[str, bytes]]]  # topic suffix, key, value, headers


def progress(message: str) -> None:
    print(f"[bench publish {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_events(path: Path, n: int) -> None:
    with path.open("w") as out:
        for i in range(n):
            payload = {
                "order_id": str(uuid.uuid4()),
                "customer_id": f"customer-{i % 500}",
                "lines": [
                    {"sku": f"sku-{i % 50}", "quantity": 1 + i % 3, "unit_price_cents": 1500},
                    {"sku": "gift-wrap", "quantity": 1, "unit_price_cents": 250},
                ],
                "shipping_address": {
                    "name": "Ann Example",
                    "line1": "1 Main Street",
                    "city": "Paris",
                    "postal_code": "75001",
                    "country": "FR",
                },
                "placed_at": "2026-03-01T12:00:00.250Z",
            }
            out.write(json.dumps({"type": "OrderPlaced", "payload": payload}) + "\n")


def pre_encode(path: Path) -> list[Record]:
    """The same events as the raw producer's input: validated, encoded, with headers."""
    preparer = Preparer(AvroCodec(Catalogue.load()))
    with contextlib.redirect_stderr(io.StringIO()):
        records = validate_file(str(path), preparer)
    return [(r.topic, r.key.encode(), r.value, r.headers()) for r in records]


async def new_prefix(bootstrap: str) -> str:
    prefix = f"bench-{uuid.uuid4().hex[:10]}."
    catalogue = Catalogue.load().prefixed(prefix)
    await apply_topics(bootstrap, [catalogue.topics[prefix + TOPIC]], dead_letters=False)
    return prefix


async def topic_size(bootstrap: str, topic: str) -> int:
    # A group id avoids aiokafka's group-less coordinator, whose stop() can misbehave.
    tps = [TopicPartition(topic, p) for p in await topic_partitions(bootstrap, topic)]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=f"size-{uuid.uuid4()}"
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


def run_cli(bootstrap: str, prefix: str, path: Path) -> float:
    parser = argparse.ArgumentParser(prog="choreo")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["publish", "--file", str(path), "--output", "json"])
    settings = PlatformSettings(kafka_bootstrap_servers=bootstrap, topic_prefix=prefix)
    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = args.run(args, settings)
    elapsed = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(f"publish exited {status}: {err.getvalue().strip()}")
    return elapsed


async def run_raw(bootstrap: str, prefix: str, records: list[Record]) -> float:
    started = time.perf_counter()
    producer = reliable_producer(bootstrap, client_id="bench-raw")
    await producer.start()
    try:
        futures = [
            await producer.send(prefix + topic, value, key=key, headers=headers)
            for topic, key, value, headers in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def run_raw_batched(bootstrap: str, prefix: str, records: list[Record]) -> float:
    started = time.perf_counter()
    producer = reliable_producer(bootstrap, client_id="bench-raw-batched")
    await producer.start()
    try:
        partitioner = DefaultPartitioner()
        batches: dict[tuple[str, int], Any] = {}
        futures = []
        for topic, key, value, headers in records:
            ids = sorted(await producer.partitions_for(prefix + topic))
            where = (prefix + topic, partitioner(key, ids, ids))
            batch = batches.setdefault(where, producer.create_batch())
            if batch.append(timestamp=None, key=key, value=value, headers=headers) is None:
                futures.append(await producer.send_batch(batch, where[0], partition=where[1]))
                batch = batches[where] = producer.create_batch()
                batch.append(timestamp=None, key=key, value=value, headers=headers)
        for (topic, partition), batch in batches.items():
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - started


def time_validation(path: Path) -> float:
    preparer = Preparer(AvroCodec(Catalogue.load()))
    started = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        validate_file(str(path), preparer)
    return time.perf_counter() - started


def _check_size(bootstrap: str, topic: str, n: int) -> None:
    size = asyncio.run(topic_size(bootstrap, topic))
    if size != n:
        raise RuntimeError(f"{topic} holds {size} events, expected {n}")


def run(bootstrap: str, n: int, repeat: int = DEFAULT_REPEAT) -> dict[str, Any]:
    """Project and raw, ``repeat`` rounds each (alternating which goes first); medians."""
    with tempfile.TemporaryDirectory(prefix="choreo-bench-publish-") as tmp:
        path = Path(tmp) / "events.jsonl"
        write_events(path, n)
        records = pre_encode(path)
        times: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for round_ in range(repeat):
            # A different order each round, so that no variant always runs first.
            shift = round_ % len(VARIANTS)
            for variant in VARIANTS[shift:] + VARIANTS[:shift]:
                seconds = _run_variant(variant, bootstrap, path, records, n)
                times[variant].append(seconds)
                progress(f"round {round_ + 1}: {variant} {n / seconds:,.0f} events/s")
        size_mb = path.stat().st_size / 1e6
    return _result(n, times, size_mb)


VARIANTS = ["project", "raw", "raw send_batch", "validate only"]


def _run_variant(variant: str, bootstrap: str, path: Path, records: list[Record], n: int) -> float:
    if variant == "validate only":
        return time_validation(path)
    prefix = asyncio.run(new_prefix(bootstrap))
    if variant == "project":
        seconds = run_cli(bootstrap, prefix, path)
    elif variant == "raw":
        seconds = asyncio.run(run_raw(bootstrap, prefix, records))
    else:
        seconds = asyncio.run(run_raw_batched(bootstrap, prefix, records))
    _check_size(bootstrap, prefix + TOPIC, n)
    return seconds


def _result(n: int, times: dict[str, list[float]], size_mb: float) -> dict[str, Any]:
    rates = {name: n / statistics.median(seconds) for name, seconds in times.items()}
    ratio = rates["project"] / rates["raw"]
    project, raw = times["project"], times["raw"]
    return {
        "benchmark": "publish --file vs raw aiokafka",
        "events": n,
        "file_mb": round(size_mb, 1),
        "seconds": {name: [round(s, 3) for s in runs] for name, runs in times.items()},
        "events_per_s": {name: round(rate) for name, rate in rates.items()},
        "ratio": round(ratio, 3),
        "paired_ratios": [round(r / p, 3) for p, r in zip(project, raw, strict=True)],
        "ratio_to_raw_send_batch": round(rates["project"] / rates["raw send_batch"], 3),
        "target": TARGET,
        "result": "PASS" if ratio >= TARGET else "FAIL",
    }


@contextlib.contextmanager
def kafka(root: Path) -> Iterator[str]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        progress(f"using the broker at {external} (KAFKA_BOOTSTRAP_SERVERS)")
        yield external
        return
    port = free_port()
    controller_port = free_port()
    while controller_port == port:
        controller_port = free_port()
    spec = BrokerSpec(home=root / "kafka", port=port, controller_port=controller_port)
    progress(f"starting a private broker on {spec.bootstrap}")
    try:
        up(spec)
        yield spec.bootstrap
    finally:
        progress("stopping the private broker")
        down(spec)


def render(result: dict[str, Any]) -> str:
    runs = len(result["seconds"]["project"])
    lines = [
        f"choreo publish --file: {result['events']:,} OrderPlaced events "
        f"({result['file_mb']} MB JSON Lines), median of {runs} runs"
    ]
    labels = {"project": "project (CLI)", "raw": "raw aiokafka send()"}
    for name, rate in result["events_per_s"].items():
        seconds = ", ".join(f"{s:.2f}s" for s in result["seconds"][name])
        lines.append(f"  {labels.get(name, name):<21} {rate:>8,} events/s  (runs: {seconds})")
    paired = ", ".join(f"{100 * r:.0f}%" for r in result["paired_ratios"])
    lines.append(
        f"  project / raw send(): {100 * result['ratio']:.1f}% (target >= "
        f"{100 * result['target']:.0f}%): {result['result']}; within each round: {paired}"
    )
    lines.append(
        f"  project / raw send_batch (context): {100 * result['ratio_to_raw_send_batch']:.1f}%"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.publish", description=__doc__)
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS, metavar="N")
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, metavar="R")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="choreo-bench-broker-") as tmp,
        kafka(Path(tmp)) as bootstrap,
    ):
        result = run(bootstrap, args.events, args.repeat)
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0 if result["result"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
