"""A replay's reader processes: they read, decode and collect while the replay writes.

Rebuilding a projection is CPU-bound in one process, and fetching, decoding and folding the
events costs about as much as writing them. For a projection that collects its batches
without I/O (``Projection.on_batch``), reader processes take that half: each reads its share
of the partitions up to the target offsets and sends the collected value of every batch,
pickled, through a pipe; the replay's own process only writes what arrives, in the order it
arrives (a projection that takes batches must not depend on the interleaving of partitions).
A pipe holds little, so a reader runs at most about one batch ahead of the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import pickle
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from events.codec import AvroCodec
from events.projection import Positions, Projection, decode_records, reader, seek_to, tune_gc

_DONE = b""
FIRST_BATCH = 2000


class ReaderError(RuntimeError):
    """A reader process failed or died; the message says how."""


@dataclass(frozen=True)
class ReaderSpec:
    bootstrap: str
    client_id: str
    projection: Projection
    codec: AvroCodec
    tps: list[TopicPartition]
    begin: Positions
    target: Positions
    batch: int


@dataclass
class Chunk:
    """One batch as a reader sends it."""

    value: Any  # the projection's collect() of the batch's events
    positions: Positions  # next offset per partition the batch covers
    records: int  # records read, handled or not
    undecodable: int


def below(
    consumer: AIOKafkaConsumer,
    batches: dict[TopicPartition, list[ConsumerRecord]],
    target: Positions,
) -> list[ConsumerRecord]:
    """The fetched records before the target; partitions that reach it are paused."""
    records: list[ConsumerRecord] = []
    for tp, recs in batches.items():
        end = target.get(tp, 0)
        records.extend(r for r in recs if r.offset < end)
        if recs and recs[-1].offset + 1 >= end:
            consumer.pause(tp)
    return records


def read(conn: Connection, spec: ReaderSpec) -> None:
    """A reader process: chunks to ``conn`` until every partition reaches the target."""
    tune_gc()
    try:
        asyncio.run(_read(conn, spec))
        conn.send_bytes(_DONE)
    except (BrokenPipeError, ConnectionResetError):
        return  # the replay went away: nothing to report to
    except BaseException as exc:
        with contextlib.suppress(OSError):
            conn.send_bytes(pickle.dumps(ReaderError(f"{type(exc).__name__}: {exc}")))
    finally:
        conn.close()


async def _read(conn: Connection, spec: ReaderSpec) -> None:
    consumer = reader(spec.bootstrap, spec.client_id)
    await consumer.start()
    try:
        await seek_to(consumer, spec.tps, spec.begin)
        positions = dict(spec.begin)
        # A small first batch: the writer starts while this reader reads on.
        size = min(spec.batch, FIRST_BATCH)
        while any(positions[tp] < spec.target.get(tp, 0) for tp in spec.tps):
            batches = await consumer.getmany(timeout_ms=500, max_records=size)
            size = spec.batch
            records = below(consumer, batches, spec.target)
            if not records:
                continue
            decoded = decode_records(spec.projection, spec.codec, records)
            assert spec.projection.collect is not None
            value = spec.projection.collect(decoded.events)
            positions.update(decoded.positions)
            chunk = Chunk(value, decoded.positions, len(records), decoded.undecodable)
            # Blocks while the pipe is full: the writer sets the pace.
            conn.send_bytes(pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL))
    finally:
        await consumer.stop()


def default_readers() -> int:
    """One reader per core (at most 4: beyond that the single writer sets the pace); none on
    one core, where readers would only take turns with the writer."""
    cores = os.cpu_count() or 1
    return 0 if cores < 2 else min(cores, 4)


def split(tps: Sequence[TopicPartition], readers: int) -> list[list[TopicPartition]]:
    """Partitions dealt round-robin, so each reader gets a share of every topic."""
    groups = [list(tps[i::readers]) for i in range(readers)]
    return [g for g in groups if g]


Received = Chunk | ReaderError | None  # None: every reader is done


@contextlib.asynccontextmanager
async def run_readers(specs: Sequence[ReaderSpec]) -> AsyncIterator[asyncio.Queue[Received]]:
    """Reader processes for the specs; the queue yields their chunks as they arrive, then
    None once all are done, or a ReaderError as soon as one fails. Leaving the context stops
    whatever still runs."""
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited loop
    queue: asyncio.Queue[Received] = asyncio.Queue(maxsize=len(specs))
    procs: list[multiprocessing.process.BaseProcess] = []
    conns: list[Connection] = []
    pumps: list[asyncio.Task[None]] = []
    finisher: asyncio.Task[None] | None = None
    try:
        for i, spec in enumerate(specs):
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=read, args=(send, spec), name=f"replay-reader-{i}")
            proc.daemon = True  # never outlives the replay
            proc.start()
            send.close()
            procs.append(proc)
            conns.append(recv)
            pumps.append(asyncio.create_task(_pump(recv, queue)))
        finisher = asyncio.create_task(_finish(pumps, queue))
        yield queue
    finally:
        for task in (*pumps, *([finisher] if finisher else [])):
            task.cancel()
        for each in procs:
            if each.is_alive():
                each.terminate()
        for each in procs:
            await asyncio.to_thread(each.join, 10)
        for conn in conns:
            conn.close()  # after the readers exit, so no pump thread is left reading it


async def _pump(conn: Connection, queue: asyncio.Queue[Received]) -> None:
    while True:
        try:
            data = await asyncio.to_thread(conn.recv_bytes)
        except EOFError:
            await queue.put(ReaderError("a reader process died before it finished"))
            return
        if data == _DONE:
            return
        await queue.put(pickle.loads(data))  # a Chunk, or the reader's ReaderError


async def _finish(pumps: list[asyncio.Task[None]], queue: asyncio.Queue[Received]) -> None:
    await asyncio.gather(*pumps)
    await queue.put(None)
