"""A replay's reader processes: they read, decode and collect while the replay writes.

Rebuilding a projection is CPU-bound in one process, and fetching, decoding and folding the
events costs about as much as writing them. For a projection that collects its batches
without I/O (``Projection.on_batch``), reader processes take that half: each reads its share
of the partitions up to the target offsets and sends the collected value of every batch,
pickled, through a pipe; the replay's own process only writes what arrives, in the order it
arrives (a projection that takes batches must not depend on the interleaving of partitions).
A reader runs at most a batch or two ahead of the writer: what the queue holds, and what
the pipe and its reading stream buffer (about a megabyte) before the reader blocks.

A projection with a reader collector (``Projection.reader_collector``) on co-partitioned
topics gets shares by partition number instead (``split_by_number``): every event of a key
then lies in one reader, which may keep what it collected for a key until it has read its
share and send it once, finished (the query projection sends its orders' rows). When the
replay writes a SQLite file on a connection of its own, the readers get a scratch directory
(``ReaderSpec.scratch``) where they may leave SQLite files for the writer to attach.

A reader is a fresh interpreter that imports this module, the codec and the projection's
collect function, and nothing else: not the program that started the replay (as
multiprocessing's spawn would, costing more CPU than a reader's share of a 100,000-event
rebuild takes to decode), nor the database layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import pickle
import struct
import sys
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from events.codec import AvroCodec
from events.kafka import KafkaConnection
from events.reading import (
    Collector,
    CollectorFactory,
    Models,
    Positions,
    decode_records,
    reader,
    seek_to,
    tune_gc,
)

FIRST_BATCH = 2000
# The command line of a reader process; its last argument is the reader's name.
READER_ENTRY = "from events.replay_readers import main; main()"
_FRAME = struct.Struct("!Q")  # each message: its length, then the pickle (0: done)


class ReaderError(RuntimeError):
    """A reader process failed or died; the message says how."""


@dataclass(frozen=True)
class ReaderSpec:
    kafka: KafkaConnection
    client_id: str
    projection: str  # its name, for log lines
    models: Models
    collector: CollectorFactory  # called with ``number`` and ``scratch`` in the reader
    number: int
    codec: AvroCodec
    tps: list[TopicPartition]
    begin: Positions
    target: Positions
    batch: int
    # Partitions of ``tps`` this reader shares with the others: of their records it takes
    # those whose key hashes to ``number`` modulo ``readers`` (see ``split_by_number``).
    shared: frozenset[TopicPartition] = frozenset()
    readers: int = 1
    scratch: str | None = None  # a directory for files to the writer (``CollectorFactory``)


@dataclass
class Chunk:
    """One batch as a reader sends it."""

    value: Any  # what the reader's collector returned for the batch (or kept till the end)
    positions: Positions  # next offset per partition the batch covers
    records: int  # records read, handled or not
    undecodable: int


def below(
    consumer: AIOKafkaConsumer,
    batches: dict[TopicPartition, list[ConsumerRecord]],
    target: Positions,
    shared: frozenset[TopicPartition] = frozenset(),
    share: tuple[int, int] = (1, 0),
) -> tuple[list[ConsumerRecord], Positions]:
    """The fetched records before the target, and the next offset of each partition they
    cover; partitions that reach the target are paused. Of a ``shared`` partition only the
    records whose key falls to ``share`` (readers, number; see ``key_share``) are kept, but
    the positions count them all."""
    records: list[ConsumerRecord] = []
    covered: Positions = {}
    readers, number = share
    for tp, recs in batches.items():
        end = target.get(tp, 0)
        if recs and recs[-1].offset + 1 >= end:
            consumer.pause(tp)
            recs = [r for r in recs if r.offset < end]
        if not recs:
            continue
        covered[tp] = recs[-1].offset + 1
        if tp in shared:
            recs = [r for r in recs if key_share(r.key, readers) == number]
        records.extend(recs)
    return records, covered


def key_share(key: bytes | None, readers: int) -> int:
    """The reader that takes a record of a shared partition: the same in every process
    (unlike ``hash``), and the same for every record with that key."""
    return zlib.crc32(key or b"") % readers


def main(argv: Sequence[str] | None = None) -> None:
    """A reader process, started by ``Readers.spawn`` as ``python -c READER_ENTRY FD NAME``:
    its chunks go out on the inherited file descriptor FD, NAME labels it in ``ps``, and its
    spec comes pickled on stdin. Only the replay starts it (no options, so no argparse)."""
    _, fd, _name = sys.argv if argv is None else argv  # argv[0] is "-c"
    out = int(fd)
    try:
        # Inside the try: a spec naming what this interpreter cannot import is reported
        # to the replay as the reason, not lost on stderr.
        data = sys.stdin.buffer.read()
        if not data:
            return  # a spare: the replay had fewer shares than reader processes
        spec: ReaderSpec = pickle.loads(data)
        tune_gc()
        # No automatic collections: they would walk the batch being collected (its events,
        # views and rows survive the young generation), about a sixth of a reader's CPU.
        # The reader collects between batches instead, when the last one is garbage.
        gc.disable()
        asyncio.run(_read(out, spec))
        _send(out, b"")
    except BrokenPipeError:
        return  # the replay went away: nothing to report to
    except BaseException as exc:
        with contextlib.suppress(OSError):
            _send(out, pickle.dumps(ReaderError(f"{type(exc).__name__}: {exc}")))
    finally:
        os.close(out)


def _send(fd: int, data: bytes) -> None:
    """Blocks while the pipe is full: the writer sets the pace."""
    view = memoryview(_FRAME.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


async def _read(out: int, spec: ReaderSpec) -> None:
    consumer = reader(spec.kafka, spec.client_id)
    await consumer.start()
    try:
        await seek_to(consumer, spec.tps, spec.begin)
        positions = dict(spec.begin)
        collector = spec.collector(spec.number, spec.scratch)
        # A small first batch: the writer starts while this reader reads on.
        size = min(spec.batch, FIRST_BATCH)
        while any(positions[tp] < spec.target.get(tp, 0) for tp in spec.tps):
            batches = await consumer.getmany(timeout_ms=500, max_records=size)
            size = spec.batch
            records, covered = below(
                consumer, batches, spec.target, spec.shared, (spec.readers, spec.number)
            )
            del batches
            if not covered:
                continue
            data = _chunk(spec, collector, records, covered)
            del records
            positions.update(covered)
            _send(out, data)
            del data
            gc.collect(1)  # the cycles the batch left; no live batch to walk (see main)
    finally:
        await consumer.stop()
    rest = collector.rest()
    if rest is not None:
        _send(out, pickle.dumps(Chunk(rest, {}, 0, 0), protocol=pickle.HIGHEST_PROTOCOL))


def _chunk(
    spec: ReaderSpec, collector: Collector, records: list[ConsumerRecord], covered: Positions
) -> bytes:
    """A batch of records, decoded, collected and pickled with the positions it covers."""
    decoded = decode_records(spec.projection, spec.models, spec.codec, records)
    chunk = Chunk(collector(decoded.events), covered, len(records), decoded.undecodable)
    return pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL)


def default_readers() -> int:
    """One reader per core (at most 4: beyond that the single writer sets the pace); none on
    one core, where readers would only take turns with the writer."""
    cores = os.cpu_count() or 1
    return 0 if cores < 2 else min(cores, 4)


def split(
    tps: Sequence[TopicPartition], readers: int, sizes: Mapping[TopicPartition, int]
) -> list[list[TopicPartition]]:
    """Partitions dealt to readers so that each gets about as many records (``sizes``):
    the largest first, each to the reader with the fewest so far. Topics differ in volume
    (every order has a few order events, one notification), so dealing them round-robin
    left one reader reading on alone at the end."""
    loads = [0] * readers
    groups: list[list[TopicPartition]] = [[] for _ in range(readers)]
    for tp in sorted(tps, key=lambda tp: (-sizes.get(tp, 0), tp.topic, tp.partition)):
        least = loads.index(min(loads))
        groups[least].append(tp)
        loads[least] += sizes.get(tp, 0)
    return [g for g in groups if g]


def split_by_number(
    tps: Sequence[TopicPartition], readers: int
) -> list[tuple[list[TopicPartition], frozenset[TopicPartition]]]:
    """Shares that keep every key's events in one reader, on topics with as many partitions
    each (events keyed alike land on the same partition number of each): partition p of
    every topic to reader p mod ``readers``, for as many numbers as divide evenly; the
    numbers left over (3 partitions, 2 readers: number 2) are read by every reader, which
    takes the records whose key hashes to it (``key_share``). Each share: its partitions,
    and those of them it shares."""
    numbers = sorted({tp.partition for tp in tps})
    whole = numbers[: len(numbers) - len(numbers) % readers]
    left = frozenset(tp for tp in tps if tp.partition not in whole)
    shares = []
    for i in range(readers):
        own = [
            tp for tp in tps if tp.partition in whole and whole.index(tp.partition) % readers == i
        ]
        mine = own + [tp for tp in tps if tp in left]
        if mine:
            shares.append((mine, left))
    return shares


def readers_by_number(numbers: int, readers: int) -> int:
    """How many readers take partitions by number: the fewest from ``readers`` up to twice
    as many that divide the partition numbers evenly (3 partitions, 2 cores: 3 readers; a
    reader more costs less than sharing a partition: both fetch and parse all of it), else
    ``readers``, sharing the numbers left over."""
    for n in range(readers, 2 * readers + 1):
        if numbers % n == 0:
            return n
    return readers


def co_partitioned(tps: Sequence[TopicPartition]) -> bool:
    """Whether every topic has as many partitions (the default partitioner then puts a
    key's events on the same partition number of each)."""
    counts: dict[str, int] = {}
    for tp in tps:
        counts[tp.topic] = counts.get(tp.topic, 0) + 1
    return len(set(counts.values())) <= 1


Received = Chunk | ReaderError | None  # None: every reader is done


class Readers:
    """Reader processes started ahead of their specs: they import what a reader needs
    while the replay sets up, then read once ``start`` sends them their specs."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []
        self.pipes: list[int] = []  # the read end of each process's chunk pipe
        self.tasks: list[asyncio.Task[None]] = []

    async def spawn(self, count: int) -> None:
        # The readers import what the spec names from this interpreter's path.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        for i in range(count):
            read_fd, write_fd = os.pipe()
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-c",
                    READER_ENTRY,
                    str(write_fd),
                    f"replay-reader-{i}",
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.DEVNULL,
                    pass_fds=(write_fd,),
                    env=env,
                )
            except BaseException:
                os.close(read_fd)
                raise
            finally:
                os.close(write_fd)
            self.procs.append(proc)
            self.pipes.append(read_fd)

    async def start(self, specs: Sequence[ReaderSpec]) -> asyncio.Queue[Received]:
        """Sends each process its spec (processes beyond the specs are told there is nothing
        to read); the queue yields their chunks as they arrive, then None once all are
        done, or a ReaderError as soon as one fails."""
        if len(specs) > len(self.procs):
            raise ValueError(f"{len(specs)} specs for {len(self.procs)} reader processes")
        queue: asyncio.Queue[Received] = asyncio.Queue(maxsize=max(len(specs), 1))
        pumps = []
        for i, (proc, read_fd) in enumerate(zip(self.procs, self.pipes, strict=True)):
            assert proc.stdin is not None
            if i < len(specs):
                pumps.append(asyncio.create_task(_pump(read_fd, queue)))
                proc.stdin.write(pickle.dumps(specs[i], protocol=pickle.HIGHEST_PROTOCOL))
                with contextlib.suppress(ConnectionError):  # one that died: its pump says so
                    await proc.stdin.drain()
            else:
                os.close(read_fd)
            proc.stdin.close()
        self.pipes = []
        self.tasks = [*pumps, asyncio.create_task(_finish(pumps, queue))]
        return queue

    async def stop(self) -> None:
        """Stops whatever still runs."""
        for task in self.tasks:
            task.cancel()
        for fd in self.pipes:
            os.close(fd)
        self.pipes = []
        for proc in self.procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@contextlib.asynccontextmanager
async def reader_processes(count: int) -> AsyncIterator[Readers]:
    """``count`` reader processes, started now; leaving the context stops what still runs."""
    readers = Readers()
    try:
        await readers.spawn(count)
        yield readers
    finally:
        await readers.stop()


async def _pump(fd: int, queue: asyncio.Queue[Received]) -> None:
    loop = asyncio.get_running_loop()
    # Reading pauses past twice the limit; a larger chunk is still read whole.
    stream = asyncio.StreamReader(limit=512 * 1024, loop=loop)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(stream, loop=loop), os.fdopen(fd, "rb", 0)
    )
    try:
        while True:
            try:
                (size,) = _FRAME.unpack(await stream.readexactly(_FRAME.size))
                data = await stream.readexactly(size)
            except asyncio.IncompleteReadError:
                await queue.put(ReaderError("a reader process died before it finished"))
                return
            if not data:
                return
            await queue.put(pickle.loads(data))  # a Chunk, or the reader's ReaderError
    finally:
        transport.close()


async def _finish(pumps: list[asyncio.Task[None]], queue: asyncio.Queue[Received]) -> None:
    await asyncio.gather(*pumps)
    await queue.put(None)
