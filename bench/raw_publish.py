"""``python -m bench.raw_publish``: the raw side of ``bench.publish``, run as its own process.

``python -m bench.raw_publish --bootstrap B --prefix P --records FILE`` loads records already
validated and encoded by the CLI's own code (``FILE``: a pickled list of (topic suffix, key,
value, headers), written untimed by the benchmark), and sends them with raw aiokafka's batch
API as the CLI sends: one open ``create_batch`` builder per partition (the default
partitioner's choice by key), ``send_batch`` when a builder is full and for every builder at
the end, every delivery awaited. The producer has ``events.kafka.reliable_producer``'s
options (idempotent, acks=all, linger 5 ms, 256 KiB batches), spelled out here so that this
process imports aiokafka and nothing of the project: it pays a raw program's start-up,
as the CLI's process pays its own.
"""

from __future__ import annotations

import argparse
import asyncio
import pickle
import sys
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

Record = tuple[str, bytes, bytes, list[tuple[str, bytes]]]


async def send_all(bootstrap: str, prefix: str, records: list[Record]) -> int:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="bench-raw-publish",
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        max_batch_size=256 * 1024,
        request_timeout_ms=15000,
    )
    await producer.start()
    try:
        partitioner = DefaultPartitioner()
        ids: dict[str, list[int]] = {}
        batches: dict[tuple[str, int], Any] = {}
        futures = []
        for suffix, key, value, headers in records:
            topic = prefix + suffix
            if topic not in ids:
                ids[topic] = sorted(await producer.partitions_for(topic))
            where = (topic, partitioner(key, ids[topic], ids[topic]))
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
    return len(records)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.raw_publish", description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", default="")
    parser.add_argument("--records", required=True, help="pickled list of records")
    args = parser.parse_args(argv)
    with open(args.records, "rb") as f:
        records: list[Record] = pickle.load(f)  # our own file, written by bench.publish
    sent = asyncio.run(send_all(args.bootstrap, args.prefix, records))
    print(sent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
