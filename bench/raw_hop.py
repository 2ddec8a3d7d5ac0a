"""One hop of the raw-aiokafka baseline pipe that ``bench.saga`` compares the saga against.

``python -m bench.raw_hop --bootstrap B --source T1 --sink T2 --group G [--value-size S]``

A raw ``AIOKafkaConsumer`` (consumer group ``G``, manual commits, the fetch options of the
project's consumers) forwards every record of ``T1`` to ``T2`` with a raw idempotent producer
(acks=all, the project producer's linger and batch size): the same key (the order id), the
same headers, the value's bytes resized to ``S`` (so that each topic of the pipe carries values
of the size of the saga event at the same step). Per fetched batch: send every record, wait for
every acknowledgement, then commit the batch's offsets. No decoding, no database.

Prints ``ready`` on stdout once the group has assigned partitions to it. Stops on SIGTERM,
SIGINT, or when its stdin closes (the benchmark that started it went away).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from dataclasses import replace

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from events.settings import PlatformSettings

MAX_BATCH = 500  # EventConsumer's default max_records
FETCH_TIMEOUT_MS = 200  # EventConsumer's default getmany timeout


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.raw_hop",
        description="forward one topic to another with raw aiokafka (benchmark baseline)",
    )
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    parser.add_argument("--source", required=True, help="topic to consume")
    parser.add_argument("--sink", required=True, help="topic to produce to")
    parser.add_argument("--group", required=True, help="consumer group id")
    parser.add_argument(
        "--value-size",
        type=int,
        default=0,
        metavar="S",
        help="resize every value to S bytes (truncate or zero-pad); 0 keeps it as it is",
    )
    parser.add_argument("--max-batch", type=int, default=MAX_BATCH, help="max records per fetch")
    parser.add_argument("--linger-ms", type=int, default=5, help="producer linger (project: 5)")
    return parser.parse_args(argv)


def resize(value: bytes, size: int) -> bytes:
    if size <= 0 or len(value) == size:
        return value
    if len(value) > size:
        return value[:size]
    return value + bytes(size - len(value))


async def _watch_stdin(stop: asyncio.Event) -> None:
    """Stops the hop when the parent closes our stdin (or dies)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except (OSError, ValueError):  # stdin is not a pipe (run by hand): rely on signals
        return
    while await reader.read(4096):
        pass
    stop.set()


async def forward(args: argparse.Namespace, stop: asyncio.Event) -> int:
    # The bootstrap from the command line; TLS and SASL from the KAFKA_* settings, as the
    # project's processes read them (bench.saga --secure).
    kafka = replace(PlatformSettings().kafka_connection(), bootstrap=args.bootstrap)
    consumer = AIOKafkaConsumer(
        args.source,
        **kafka.client_options(),
        group_id=args.group,
        client_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=16 * 1024 * 1024,
    )
    producer = AIOKafkaProducer(
        **kafka.client_options(),
        client_id=f"{args.group}-producer",
        enable_idempotence=True,
        acks="all",
        linger_ms=args.linger_ms,
        max_batch_size=256 * 1024,
    )
    forwarded = 0
    await producer.start()
    try:
        await consumer.start()
        announced = False
        while not stop.is_set():
            batches = await consumer.getmany(
                timeout_ms=FETCH_TIMEOUT_MS, max_records=args.max_batch
            )
            if not announced and consumer.assignment():
                print("ready", flush=True)
                announced = True
            if not batches:
                continue
            futures = []
            offsets: dict[TopicPartition, OffsetAndMetadata] = {}
            for tp, records in batches.items():
                if not records:
                    continue
                for r in records:
                    futures.append(
                        await producer.send(
                            args.sink,
                            resize(r.value or b"", args.value_size),
                            key=r.key,
                            headers=list(r.headers or ()),
                        )
                    )
                offsets[tp] = OffsetAndMetadata(records[-1].offset + 1, "")
            await asyncio.gather(*futures)
            await consumer.commit(offsets)
            forwarded += len(futures)
    finally:
        with contextlib.suppress(KafkaError, OSError):
            await consumer.stop()
        with contextlib.suppress(KafkaError, OSError):
            await producer.stop()
    return forwarded


async def amain(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(_watch_stdin(stop))
    try:
        return await forward(args, stop)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    forwarded = asyncio.run(amain(args))
    print(f"forwarded {forwarded}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
