"""``python -m bench.raw_read``: one process of ``bench.replay``'s raw side.

``python -m bench.raw_read --bootstrap B --prefix P --topics T[,T...] --share I --of K
--batch N``
reads, from the beginning to the end offsets, the partitions numbered ``p`` with
``p % K == I`` of every topic, with the projection reader's consumer settings
(``events.reading.reader``) and in the replay's batch size (``--batch``),
``AvroCodec.decode``-s every message (with ``--registry URL``: decodes the schema registry
wire format with fastavro, writer schemas fetched from that registry once per id,
``bench.raw_decode``) and prints how many. The replay splits the same
partitions among as many reader processes, so the raw side uses as many processes as the
replay and each pays a start-up; it imports what reading and decoding need (about 0.1 s),
not the query service.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.raw_decode import Decoder, RegistryDecoder
from events.catalogue import Catalogue
from events.codec import AvroCodec
from events.kafka import KafkaConnection
from events.reading import reader, seek_to
from events.topics import partitions_of


async def read_share(
    bootstrap: str,
    prefix: str,
    topics: list[str],
    share: int,
    of: int,
    batch: int,
    registry: str | None = None,
) -> int:
    codec: Decoder = (
        AvroCodec(Catalogue.load().prefixed(prefix))
        if registry is None
        else RegistryDecoder(registry)
    )
    tps = [
        tp
        for tp in await partitions_of(KafkaConnection(bootstrap), topics)
        if tp.partition % of == share
    ]
    if not tps:
        return 0
    consumer = reader(KafkaConnection(bootstrap), f"bench-raw-read-{share}")
    await consumer.start()
    try:
        return await read_to_end(consumer, tps, codec, batch)
    finally:
        await consumer.stop()


async def read_to_end(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition], codec: Decoder, batch: int
) -> int:
    """Reads ``tps`` from the beginning to their end offsets, decoding every message;
    returns how many (the raw side's loop, in a process of its own or in the benchmark's)."""
    await seek_to(consumer, tps, {})
    left = sum((await consumer.end_offsets(tps)).values())
    decoded = 0
    while left > 0:
        batches = await consumer.getmany(timeout_ms=500, max_records=batch)
        for records in batches.values():
            for record in records:
                codec.decode(record.value or b"")
            decoded += len(records)
            left -= len(records)
    return decoded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.raw_read", description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--topics", required=True, help="comma-separated, prefixed")
    parser.add_argument("--share", type=int, required=True)
    parser.add_argument("--of", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True, help="max records per getmany")
    parser.add_argument("--registry", help="the registry format: ids looked up at this URL")
    args = parser.parse_args(argv)
    topics = [t for t in args.topics.split(",") if t]
    read = read_share(
        args.bootstrap, args.prefix, topics, args.share, args.of, args.batch, args.registry
    )
    print(asyncio.run(read))
    return 0


if __name__ == "__main__":
    sys.exit(main())
