"""The analytics service (faust) as a process against the real broker: the windows it
serves match, number for number, the saga events published with known event times."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from events.catalogue import Catalogue
from events.codec import AvroCodec
from events.envelope import Envelope, new_event_id
from events.kafka import KafkaConnection, reliable_producer
from events.publisher import Draft, publish
from events.supervisor import ProcessSpec, start, stop, wait_ready
from events.topics import apply_topics, partitions_of
from infra.broker import free_port
from tests.support import eventually, unique
from tests.tokens import operator_headers

pytestmark = [pytest.mark.integration, pytest.mark.no_database]

ADDRESS = {
    "name": "Ada",
    "line1": "1 Main St",
    "city": "Berlin",
    "postal_code": "10115",
    "country": "DE",
}


@dataclass
class Analytics:
    bootstrap: str
    prefix: str
    codec: AvroCodec
    spec: ProcessSpec
    var_dir: Path
    env: dict[str, str]
    http: httpx.AsyncClient

    async def start(self) -> None:
        start([self.spec], var_dir=self.var_dir, bootstrap=self.bootstrap, env=self.env)
        await asyncio.to_thread(wait_ready, [self.spec], var_dir=self.var_dir, deadline_s=90)

    async def stop(self) -> None:
        await asyncio.to_thread(stop, [self.spec], var_dir=self.var_dir)

    async def windows(self, window: str) -> list[dict[str, Any]]:
        response = await self.http.get("/api/v1/analytics", params={"window": window})
        response.raise_for_status()
        return list(response.json()["windows"])

    async def metrics(self) -> list[Metric]:
        text = (await self.http.get("/metrics")).text
        return list(text_string_to_metric_families(text))

    async def wait_for(self, window: str, expected: list[dict[str, Any]]) -> None:
        async def matches() -> bool:
            return await self.windows(window) == expected

        try:
            await eventually(matches, deadline_s=60, poll_s=0.25, what=f"{window} windows")
        except AssertionError:
            print(self.log_tail())  # pytest shows it with the failure
            assert await self.windows(window) == expected  # shows the difference
            raise

    def log_tail(self, lines: int = 80) -> str:
        log = self.var_dir / "logs" / f"{self.spec.name}.log"
        text = log.read_text(errors="replace") if log.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])


@contextlib.asynccontextmanager
async def running_analytics(bootstrap: str, tmp_path: Path, **env: str) -> AsyncIterator[Analytics]:
    """The analytics process over a fresh prefix; ``env`` adds to its environment."""
    prefix = unique("an") + "."
    catalogue = Catalogue.load().prefixed(prefix)
    await apply_topics(KafkaConnection(bootstrap), list(catalogue.topics.values()))
    spec = ProcessSpec("analytics", "services.analytics", free_port())
    env = {"TOPIC_PREFIX": prefix, "LOG_FORMAT": "json", **env}
    base = f"http://127.0.0.1:{spec.port}"
    async with httpx.AsyncClient(base_url=base, timeout=10, headers=operator_headers()) as http:
        svc = Analytics(bootstrap, prefix, AvroCodec(catalogue), spec, tmp_path / "var", env, http)
        try:
            await svc.start()
            yield svc
        finally:
            await svc.stop()


@pytest.fixture
async def analytics(kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[Analytics]:
    async with running_analytics(kafka_bootstrap, tmp_path) as svc:
        yield svc


# --- saga events as the services write them, at chosen event times ---------------------


class Saga:
    def __init__(self) -> None:
        self.drafts: list[Draft] = []

    def _add(self, event_type: str, order_id: str, at: datetime, **fields: Any) -> str:
        payload = {"order_id": order_id, "customer_id": "cust-1", **fields}
        draft = Draft(event_type, payload, order_id, event_id=new_event_id(), occurred_at=at)
        self.drafts.append(draft)
        return order_id

    def created(self, at: datetime, order_id: str | None = None) -> str:
        line = {"sku": "SKU-1", "quantity": 1, "unit_price_cents": 500}
        order_id = order_id or str(uuid.uuid4())
        fields = {"lines": [line], "total_cents": 500, "shipping_address": ADDRESS}
        return self._add("OrderCreated", order_id, at, **fields, created_at=at)

    def completed(self, order_id: str, at: datetime) -> None:
        fields = {"total_cents": 500, "shipment_id": "shp-1", "completed_at": at}
        self._add("OrderCompleted", order_id, at, **fields)

    def rejected(self, order_id: str, at: datetime, reason: str) -> None:
        fields = {"reason": reason, "failed_step": "inventory", "rejected_at": at}
        self._add("OrderRejected", order_id, at, **fields)

    def cancelled(self, order_id: str, at: datetime, reason: str) -> None:
        self._add("OrderCancelled", order_id, at, reason=reason, cancelled_at=at)

    def captured(self, order_id: str, at: datetime, cents: int) -> None:
        fields = {"payment_id": "pay-1", "amount_cents": cents, "shipping_address": ADDRESS}
        self._add("PaymentCaptured", order_id, at, **fields, captured_at=at)

    def refunded(self, order_id: str, at: datetime, cents: int, reason: str) -> None:
        fields = {"payment_id": "pay-1", "amount_cents": cents, "reason": reason}
        self._add("PaymentRefunded", order_id, at, **fields, refunded_at=at)

    def declined(self, order_id: str, at: datetime) -> None:
        fields = {"amount_cents": 500, "reason": "insufficient funds", "balance_cents": 0}
        self._add("PaymentDeclined", order_id, at, **fields, declined_at=at)


def minute_in_the_last_hour() -> datetime:
    """A minute whose next minute is in the same hour, long enough ago to be complete."""
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    return hour + timedelta(minutes=10)


def sec(t0: datetime, s: float) -> datetime:
    return t0 + timedelta(seconds=s)


def window(start: datetime, size: timedelta, **figures: Any) -> dict[str, Any]:
    return {"start": start.isoformat(), "end": (start + size).isoformat(), **figures}


async def send_raw(
    a: Analytics, topic: str, key: str, value: bytes, headers: list[tuple[str, bytes]]
) -> None:
    producer = reliable_producer(KafkaConnection(a.bootstrap), client_id="analytics-test")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key.encode(), headers=headers)
    finally:
        await producer.stop()


async def changelog_keys(a: Analytics, topic: str) -> list[tuple[int, bytes]]:
    """(partition, key) of every record in a changelog topic, read to its end."""
    tps = await partitions_of(KafkaConnection(a.bootstrap), [topic])
    consumer = AIOKafkaConsumer(bootstrap_servers=a.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[tuple[int, bytes]] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(*tps, timeout_ms=1000)
            out.extend((r.partition, r.key) for records in batch.values() for r in records)
        return out
    finally:
        await consumer.stop()


def totals(families: list[Metric], name: str) -> list[Sample]:
    return [
        sample
        for family in families
        if family.name == name
        for sample in family.samples
        if sample.name.endswith("_total")
    ]


def envelope_headers(event_type: str, key: str, at: datetime) -> list[tuple[str, bytes]]:
    env = Envelope(new_event_id(), event_type, 1, at, "test", new_event_id(), key)
    return env.to_headers()


# --- the tests --------------------------------------------------------------------------


async def test_windows_count_what_was_sent_and_skip_unreadable_messages(analytics: Analytics):
    a = analytics
    for params in ({"window": "day"}, {"limit": "0"}, {"limit": "many"}, {"limit": "1001"}):
        response = await a.http.get("/api/v1/analytics", params=params)
        assert response.status_code == 422, params
        assert set(response.json()) == {"detail"}
    empty = (await a.http.get("/api/v1/analytics", params={"window": "hour"})).json()
    assert empty == {"window": "hour", "size_s": 3600, "windows": []}

    t0 = minute_in_the_last_hour()
    t1 = t0 + timedelta(minutes=1)
    saga = Saga()

    # Minute t0: ten sagas end here, so p50, p90 and p99 are three different durations.
    o1 = saga.created(sec(t0, 1))
    saga.captured(o1, sec(t0, 2), 2500)
    saga.completed(o1, sec(t0, 2.5))  # 1500 ms
    o2 = saga.created(sec(t0, 3))
    o2_created = saga.drafts[-1]
    saga.rejected(o2, sec(t0, 5), "insufficient stock: SKU-1 (requested 3, available 1)")  # 2000
    o3 = saga.created(sec(t0, 10))
    saga.captured(o3, sec(t0, 11), 4000)
    saga.cancelled(o3, sec(t0, 21), "address unserviceable: country AQ is not served")  # 11000
    saga.refunded(o3, sec(t0, 22), 4000, "address unserviceable: country AQ is not served")
    for start_s, ms in [(30, 250), (31, 400), (32, 700), (33, 900), (34, 1200), (35, 5000)]:
        saga.completed(saga.created(sec(t0, start_s)), sec(t0, start_s + ms / 1000))
    o10 = saga.created(sec(t0, 40))
    saga.completed(o10, sec(t0, 48))  # 8000
    o_long = saga.created(sec(t0, 30))  # ends in the next minute
    saga.declined(o2, sec(t0, 4))  # not a figure analytics keeps

    # Minute t1.
    o12 = saga.created(sec(t1, 1))
    saga.cancelled(o12, sec(t1, 4), "changed my mind")  # 3000
    o13 = saga.created(sec(t1, 2))
    saga.rejected(o13, sec(t1, 5), "insufficient stock: SKU-2 (requested 1, available 0)")  # 3000
    saga.captured(o_long, sec(t1, 10), 999)
    saga.completed(o_long, sec(t1, 30))  # 60000 ms, counted where the saga ended
    saga.completed(str(uuid.uuid4()), sec(t1, 35))  # its start was never seen: no duration
    saga.created(sec(t1, 40))  # still running

    # Unreadable messages first, on the partitions of orders that follow: not bytes of a
    # contract, and a valid body without its envelope. Neither may stop what comes after.
    orders_topic = a.codec.catalogue.topic_for("OrderCreated")
    await send_raw(
        a, orders_topic, o1, b"not avro", envelope_headers("OrderCreated", o1, sec(t0, 1))
    )
    await send_raw(a, orders_topic, o2, a.codec.encode("OrderCreated", o2_created.payload), [])
    await publish(a.codec, KafkaConnection(a.bootstrap), saga.drafts, producer="analytics-test")
    # What a relay's retry or a dead-letter redrive does: the same events again, same
    # envelopes. They are not counted twice.
    again = [d for d in saga.drafts if d.key in (o1, o3)]
    await publish(a.codec, KafkaConnection(a.bootstrap), again, producer="analytics-test")

    minute = timedelta(minutes=1)
    minutes = [
        window(
            t0,
            minute,
            placed=11,
            completed=8,
            rejected=1,
            cancelled=1,
            captured_cents=6500,
            refunded_cents=4000,
            failure_reasons={"address unserviceable": 1, "insufficient stock": 1},
            # sorted: 250 400 700 900 1200 1500 2000 5000 8000 11000 (nearest rank)
            duration_ms={"count": 10, "p50": 1200.0, "p90": 8000.0, "p99": 11000.0},
        ),
        window(
            t1,
            minute,
            placed=3,
            completed=2,
            rejected=1,
            cancelled=1,
            captured_cents=999,
            refunded_cents=0,
            failure_reasons={"changed my mind": 1, "insufficient stock": 1},
            duration_ms={"count": 3, "p50": 3000.0, "p90": 60000.0, "p99": 60000.0},
        ),
    ]
    hours = [
        window(
            t0.replace(minute=0),
            timedelta(hours=1),
            placed=14,
            completed=10,
            rejected=2,
            cancelled=2,
            captured_cents=7499,
            refunded_cents=4000,
            failure_reasons={
                "address unserviceable": 1,
                "changed my mind": 1,
                "insufficient stock": 2,
            },
            # 13 durations: ranks 7, 12 and 13 of the sorted list
            duration_ms={"count": 13, "p50": 2000.0, "p90": 11000.0, "p99": 60000.0},
        )
    ]
    await a.wait_for("minute", minutes)
    await a.wait_for("hour", hours)

    # The figures cannot tell whether the copies were read yet: the counter of skipped
    # duplicates can. Once it has them all, the figures are still the same.
    async def duplicates_skipped() -> bool:
        samples = totals(await a.metrics(), "choreo_duplicates_skipped")
        return [(d.labels["consumer"], d.value) for d in samples] == [("analytics", len(again))]

    await eventually(duplicates_skipped, deadline_s=30, poll_s=0.25, what="duplicates skipped")
    assert await a.windows("minute") == minutes
    assert await a.windows("hour") == hours

    # The unreadable messages came first on their partitions, which have been read since.
    skipped = {
        (sample.labels["topic"], sample.labels["error_type"]): sample.value
        for sample in totals(await a.metrics(), "choreo_analytics_malformed")
    }
    assert skipped == {
        (orders_topic, "MalformedEventError"): 1.0,
        (orders_topic, "EnvelopeError"): 1.0,
    }

    latest = (await a.http.get("/api/v1/analytics", params={"limit": 1})).json()
    assert latest["window"] == "minute" and latest["size_s"] == 60
    assert [w["start"] for w in latest["windows"]] == [t1.isoformat()]


async def test_figures_survive_a_restart(analytics: Analytics):
    """The tables live in memory: a new process rebuilds them from the changelog topics,
    every partition's part included, and does not count the events a second time."""
    a = analytics
    t0 = minute_in_the_last_hour()
    saga = Saga()
    for i in range(12):  # spread over the topics' partitions by their order ids
        order_id = saga.created(sec(t0, i))
        saga.captured(order_id, sec(t0, i + 1), 100)
        saga.completed(order_id, sec(t0, i + 2))
    await publish(a.codec, KafkaConnection(a.bootstrap), saga.drafts, producer="analytics-test")
    expected = [
        window(
            t0,
            timedelta(minutes=1),
            placed=12,
            completed=12,
            rejected=0,
            cancelled=0,
            captured_cents=1200,
            refunded_cents=0,
            failure_reasons={},
            duration_ms={"count": 12, "p50": 2000.0, "p90": 2000.0, "p99": 2000.0},
        )
    ]
    await a.wait_for("minute", expected)

    # Each windowed key is written from one source partition, so to one changelog
    # partition: recovery cannot pick one partition's copy over another's.
    for table in ("minute-windows", "hour-windows", "saga-starts"):
        keys = await changelog_keys(a, f"{a.prefix}analytics-{table}-changelog")
        partitions_of_key: dict[bytes, set[int]] = {}
        for partition, key in keys:
            partitions_of_key.setdefault(key, set()).add(partition)
        assert keys and all(len(p) == 1 for p in partitions_of_key.values()), table
    window_keys = await changelog_keys(a, f"{a.prefix}analytics-minute-windows-changelog")
    assert len({p for p, _ in window_keys}) > 1  # the orders really did spread out

    await a.stop()
    await a.start()
    assert await a.windows("minute") == expected

    # and it goes on counting from where it was
    late = Saga()
    late.completed(late.created(sec(t0, 50)), sec(t0, 51))
    await publish(a.codec, KafkaConnection(a.bootstrap), late.drafts, producer="analytics-test")
    expected[0].update(placed=13, completed=13)
    expected[0]["duration_ms"] = {"count": 13, "p50": 2000.0, "p90": 2000.0, "p99": 2000.0}
    await a.wait_for("minute", expected)


async def test_the_platform_shell_json_logs_and_a_span_per_counted_event_in_its_trace(
    kafka_bootstrap: str, tmp_path: Path
):
    """Logs and tracing as every service has them (events.process): spans go to the
    console exporter (chosen by OpenTelemetry's standard variables), which writes them to the
    process's log file beside the JSON lines."""
    env = {
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_SERVICE_NAME": "analytics-eu",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    async with running_analytics(kafka_bootstrap, tmp_path, **env) as a:
        trace_id = uuid.uuid4().hex
        order_id = str(uuid.uuid4())
        at = minute_in_the_last_hour()
        line = {"sku": "SKU-1", "quantity": 1, "unit_price_cents": 500}
        payload = {
            "order_id": order_id,
            "customer_id": "cust-1",
            "lines": [line],
            "total_cents": 500,
            "shipping_address": ADDRESS,
            "created_at": at,
        }
        envelope = Envelope(
            new_event_id(),
            "OrderCreated",
            1,
            at,
            "test",
            new_event_id(),
            order_id,
            traceparent=f"00-{trace_id}-{'1' * 16}-01",
        )
        topic = a.codec.catalogue.topic_for("OrderCreated")
        value = a.codec.encode("OrderCreated", payload)
        await send_raw(a, topic, order_id, value, envelope.to_headers())

        def traced() -> bool:
            text = a.log_tail(lines=100_000)
            return f'"trace_id": "0x{trace_id}"' in text and f'"process {topic}"' in text

        await eventually(traced, deadline_s=60, poll_s=0.2, what="the counted event's span")
        assert (await a.http.get("/health")).json() == {"status": "ok", "service": "analytics"}
    text = a.log_tail(lines=100_000)
    # The messaging conventions' names; the group is faust's (the app id).
    assert '"messaging.operation.type": "process"' in text
    assert f'"messaging.kafka.message.key": "{order_id}"' in text
    assert '"messaging.consumer.group.name": "' in text
    assert '"service.name": "analytics-eu"' in text  # OTEL_SERVICE_NAME; the logs keep theirs
    records = [json.loads(ln) for ln in text.splitlines() if ln.startswith('{"')]
    assert records and all(r["service"] == "analytics" for r in records)
    assert all({"event", "level", "logger", "timestamp"} <= r.keys() for r in records)
    assert any(r["event"] == "analytics stopped" for r in records)
