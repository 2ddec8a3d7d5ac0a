"""The saga benchmark's eyes on Kafka: a raw consumer on the last topic that notes when each
expected order arrived there (``CompletionWatch``), and what a terminal order event says."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from bench.common import partitions, unique
from events.codec import AvroCodec, CodecError
from events.envelope import H_EVENT_TYPE
from events.kafka import KafkaConnection

FAILED = {"OrderRejected", "OrderCancelled"}


class SagaBenchError(Exception):
    """The run did not do what it claims (a saga failed, a count is off, a deadline passed)."""


Matcher = Callable[[ConsumerRecord], tuple[str, bool] | None]


def header(record: ConsumerRecord, name: str) -> str | None:
    for k, v in record.headers or ():
        if k == name:
            return bytes(v).decode()
    return None


def saga_matcher(codec: AvroCodec) -> Matcher:
    """(order id, succeeded) for a terminal order event; None for anything else."""

    def match(record: ConsumerRecord) -> tuple[str, bool] | None:
        event_type = header(record, H_EVENT_TYPE)
        if event_type == "OrderCompleted":
            try:
                decoded = codec.decode(record.value or b"")
            except CodecError as exc:
                raise SagaBenchError(f"undecodable OrderCompleted: {exc}") from None
            return str(decoded.payload["order_id"]), True
        if event_type in FAILED:
            return (record.key or b"").decode(), False
        return None

    return match


def key_matcher(record: ConsumerRecord) -> tuple[str, bool] | None:
    return (record.key or b"").decode(), True


class CompletionWatch:
    """A raw consumer on the last topic: when did each expected id arrive there?

    Positioned at the topic's end before anything is sent; ``expect`` registers ids with their
    start time; ``wait`` returns once ``count`` of them arrived (no polling: the consumer task
    sets an event).
    """

    def __init__(self, kafka: KafkaConnection, topic: str, match: Matcher) -> None:
        self.kafka = kafka
        self.topic = topic
        self.match = match
        self.started: dict[str, float] = {}
        self.latency: dict[str, float] = {}
        self.arrived_at: dict[str, float] = {}
        self.failed: list[str] = []
        self._want = 0
        self._reached = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            **self.kafka.client_options(),
            group_id=unique("bench-saga-watch"),
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
        )
        self._consumer = consumer
        try:
            await consumer.start()
            tps = partitions(self.topic)
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            for tp in tps:
                await consumer.position(tp)
        except BaseException:
            await self.close()
            raise
        self._task = asyncio.create_task(self._run(consumer), name=f"watch {self.topic}")

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=200)
                now = time.perf_counter()
                for records in batches.values():
                    for record in records:
                        hit = self.match(record)
                        if hit is None:
                            continue
                        oid, ok = hit
                        begun = self.started.get(oid)
                        if begun is None or oid in self.latency:
                            continue
                        if not ok:
                            self.failed.append(oid)
                            self._reached.set()
                            continue
                        self.latency[oid] = now - begun
                        self.arrived_at[oid] = now
                if len(self.latency) >= self._want:
                    self._reached.set()
        except BaseException as exc:
            self._error = exc
            self._reached.set()
            raise

    def expect(self, ids: Sequence[str], at: float) -> None:
        for oid in ids:
            self.started[oid] = at

    async def wait(self, count: int, deadline_s: float, what: str) -> float:
        """Until ``count`` expected ids arrived; returns the perf_counter time it happened."""
        self._want = count
        self._reached.clear()
        try:
            async with asyncio.timeout(deadline_s):
                while len(self.latency) < count:
                    if self._error is not None:
                        raise SagaBenchError(f"watch on {self.topic} died: {self._error!r}")
                    if self.failed:
                        raise SagaBenchError(
                            f"{len(self.failed)} order(s) did not complete, e.g. {self.failed[0]}"
                        )
                    await self._reached.wait()
                    self._reached.clear()
        except TimeoutError:
            raise SagaBenchError(
                f"{what}: only {len(self.latency)} of {count} arrived within {deadline_s:.0f}s"
            ) from None
        return max(self.arrived_at.values())

    def latencies(self, ids: Sequence[str]) -> list[float]:
        return [self.latency[i] for i in ids if i in self.latency]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._consumer is not None:
            with contextlib.suppress(KafkaError, OSError):
                await self._consumer.stop()
