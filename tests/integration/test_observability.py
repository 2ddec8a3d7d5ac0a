"""One trace per saga, continuing the caller's, with spans named and attributed by the
OpenTelemetry messaging conventions; ids on every log line; metrics that move."""

from __future__ import annotations

import io
import json
import logging
import random
import uuid
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes import messaging_attributes as messaging
from opentelemetry.trace import SpanKind

from events.envelope import utcnow
from events.kafka import KafkaConnection
from events.logs import configure_logging
from events.publisher import Draft, publish
from tests.integration.inprocess import saga_in_process
from tests.support import eventually, unique
from tests.tracing import memory_exporter

pytestmark = pytest.mark.integration

QUERY = "projection-query"  # the consumer name on the query projection's handling spans
# The messaging conventions' attribute names, as the installed semantic-conventions name them.
SYSTEM = messaging.MESSAGING_SYSTEM
OPERATION_TYPE = messaging.MESSAGING_OPERATION_TYPE
DESTINATION = messaging.MESSAGING_DESTINATION_NAME
PARTITION = messaging.MESSAGING_DESTINATION_PARTITION_ID
GROUP = messaging.MESSAGING_CONSUMER_GROUP_NAME
OFFSET = messaging.MESSAGING_KAFKA_OFFSET
KEY = messaging.MESSAGING_KAFKA_MESSAGE_KEY
MESSAGE_ID = messaging.MESSAGING_MESSAGE_ID

ADDRESS = {
    "name": "Ada",
    "line1": "1 Main St",
    "city": "Berlin",
    "postal_code": "10115",
    "country": "DE",
}


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = memory_exporter()
    yield exporter
    exporter.shutdown()  # keeps no more spans: the provider outlives this module


async def seed(bootstrap, codec, sku, customer):
    await publish(
        codec,
        KafkaConnection(bootstrap),
        [
            Draft(
                "StockRestocked",
                {
                    "restock_id": str(uuid.uuid4()),
                    "sku": sku,
                    "quantity": 10,
                    "restocked_at": utcnow(),
                    "unit_price_cents": 500,  # what the tests' orders are charged
                },
                sku,
            ),
            Draft(
                "FundsDeposited",
                {
                    "deposit_id": str(uuid.uuid4()),
                    "customer_id": customer,
                    "amount_cents": 100_000,
                    "deposited_at": utcnow(),
                },
                customer,
            ),
        ],
    )


def client_traceparent() -> tuple[str, int, int]:
    """A caller's sampled traceparent with fresh ids: (header, trace id, span id)."""
    trace_id, span_id = random.getrandbits(128) | 1, random.getrandbits(64) | 1
    return f"00-{trace_id:032x}-{span_id:016x}-01", trace_id, span_id


def consumer_of(span) -> str:
    """The service (or projection) a process span belongs to."""
    name = span.attributes.get(GROUP) or span.attributes["choreo.consumer"]
    return name.split(".")[-1]


def check_the_saga_continues_the_callers_trace(finished, order_id, trace_id, span_id):
    """Every span of the order's saga is in the caller's trace, each one's parent in it (the
    request's server span's is the caller's span): POST -> place order -> send -> process ->
    send -> ... with no break and no second root. Returns the consumers that processed."""
    in_trace = [s for s in finished if s.context.trace_id == trace_id]
    by_id = {s.context.span_id: s for s in in_trace}
    (server,) = [s for s in in_trace if s.kind is SpanKind.SERVER]
    assert server.name == "POST /api/v1/orders"
    assert server.parent is not None and server.parent.span_id == span_id
    assert server.parent.is_remote
    (place,) = [s for s in in_trace if s.name == "place order"]
    assert place.attributes["choreo.order_id"] == order_id
    assert place.parent is not None and place.parent.span_id == server.context.span_id
    for span in in_trace:
        if span is server:
            continue
        assert span.parent is not None, f"{span.name} is a second root"
        assert span.parent.span_id in by_id, f"{span.name}'s parent is not in the trace"
    sends = [s for s in in_trace if s.kind is SpanKind.PRODUCER]
    processes = [s for s in in_trace if s.kind is SpanKind.CONSUMER]
    assert sends and processes
    for send in sends:
        assert send.name == f"send {send.attributes[DESTINATION]}"
        assert send.attributes[OPERATION_TYPE] == "send"
        assert by_id[send.parent.span_id] is place or by_id[send.parent.span_id].kind in (
            SpanKind.CONSUMER,
            SpanKind.INTERNAL,
        )
    for process in processes:
        # A consumer's span is the child of the relay's send of that very message.
        send = by_id[process.parent.span_id]
        assert send.kind is SpanKind.PRODUCER, f"{process.name}'s parent is {send.name}"
        assert send.attributes[DESTINATION] == process.attributes[DESTINATION]
        assert process.name == f"process {process.attributes[DESTINATION]}"
        assert process.attributes[OPERATION_TYPE] == "process"
        assert process.attributes[SYSTEM] == "kafka"
        assert process.attributes[PARTITION].isdigit()
        assert isinstance(process.attributes[OFFSET], int)
        assert process.attributes[MESSAGE_ID]
    # Nothing of this order's saga was processed outside its trace (no second root).
    elsewhere = [
        s.name
        for s in finished
        if s.kind is SpanKind.CONSUMER
        and s.attributes.get(KEY) == order_id
        and s.context.trace_id != trace_id
    ]
    assert not elsewhere, f"spans of the order in another trace: {elsewhere}"
    return {consumer_of(s) for s in processes}


async def test_a_callers_traceparent_is_the_parent_of_the_whole_saga(
    kafka_bootstrap, tmp_path, spans, database_url
):
    prefix = unique("trace") + "."
    async with saga_in_process(kafka_bootstrap, tmp_path, prefix, database_url) as saga:
        sku, customer = unique("sku"), unique("cust")
        await seed(kafka_bootstrap, saga.codec, sku, customer)
        await eventually(lambda: _stocked(saga, sku), what="stock seeded")
        spans.clear()
        ok_id, bad_id = str(uuid.uuid4()), str(uuid.uuid4())
        callers = {ok_id: client_traceparent(), bad_id: client_traceparent()}
        for oid, country in ((ok_id, "DE"), (bad_id, "AQ")):
            r = await saga.clients["orders"].post(
                "/api/v1/orders",
                json={
                    "order_id": oid,
                    "customer_id": customer,
                    "lines": [{"sku": sku, "quantity": 1, "unit_price_cents": 500}],
                    "shipping_address": {**ADDRESS, "country": country},
                },
                headers={"traceparent": callers[oid][0]},
            )
            assert r.status_code == 201
        for oid in (ok_id, bad_id):
            await eventually(
                lambda oid=oid: _notified(saga, oid), deadline_s=60, what=f"order {oid} notified"
            )
        # the compensation of the unserviceable order: refund then release
        await eventually(lambda: _released(saga, bad_id), what="stock released")
        # The refund and the release also handle the failure's later events: wait for them.
        wanted = {("ShipmentFailed", "payments"), ("PaymentRefunded", "inventory")}
        bad_trace = callers[bad_id][1]
        await eventually(
            lambda: wanted <= _causation_edges(spans.get_finished_spans(), bad_trace),
            what="the compensations' spans",
        )
        # The read side projects each order's events in the same traces.
        for oid, last in ((ok_id, "CustomerNotified"), (bad_id, "StockReleased")):
            await eventually(
                lambda oid=oid, last=last: (
                    (last, QUERY) in _causation_edges(spans.get_finished_spans(), callers[oid][1])
                ),
                what=f"the query's span of {last} for {oid}",
            )
        # A send span ends at the broker's ack, which can come after its consumer's span.
        for oid in (ok_id, bad_id):
            trace_id = callers[oid][1]
            await eventually(
                lambda trace_id=trace_id: _parents_ended(spans.get_finished_spans(), trace_id),
                what=f"the parent of every span of {oid}'s saga (a break in the chain)",
            )
        finished = spans.get_finished_spans()

    saga = {"orders", "inventory", "payments", "shipping", "notifications"}
    for oid in (ok_id, bad_id):
        _, trace_id, span_id = callers[oid]
        # Success: the five saga services (and inventory ships), and the query's projection;
        # compensation: the same trace reaches refund (payments) and release (inventory).
        consumers = check_the_saga_continues_the_callers_trace(finished, oid, trace_id, span_id)
        assert consumers == saga | {QUERY}
    projected = _causation_edges(finished, callers[ok_id][1])
    for event_type in ("OrderCreated", "StockReserved", "PaymentCaptured", "ShipmentScheduled"):
        assert (event_type, QUERY) in projected, f"the query did not trace {event_type}"


def _causation_edges(finished, trace_id):
    """(event type, consumer) of each process span in the trace."""
    return {
        (s.attributes["choreo.event_type"], consumer_of(s))
        for s in finished
        if s.context.trace_id == trace_id and s.kind is SpanKind.CONSUMER
    }


def _parents_ended(finished, trace_id):
    in_trace = [s for s in finished if s.context.trace_id == trace_id]
    ids = {s.context.span_id for s in in_trace}
    return all(s.parent.span_id in ids for s in in_trace if s.kind is SpanKind.CONSUMER)


async def _stocked(saga, sku):
    # Orders knows the price once inventory counted the restock that set it (one commit).
    r = await saga.clients["orders"].get(f"/api/v1/prices/{sku}")
    return r.status_code == 200


async def _notified(saga, oid):
    r = await saga.clients["notifications"].get(f"/api/v1/notifications/{oid}")
    return r.status_code == 200


async def _released(saga, oid):
    r = await saga.clients["inventory"].get(f"/api/v1/reservations/{oid}")
    return r.status_code == 200 and r.json()["status"] == "RELEASED"


@pytest.fixture
def captured_logs():
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    captured = io.StringIO()
    configure_logging("saga", json=True, stream=captured)
    yield captured
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


async def test_log_lines_of_a_handled_event_carry_its_ids(
    kafka_bootstrap, tmp_path, spans, captured_logs, database_url
):
    captured = captured_logs
    prefix = unique("logs") + "."
    async with saga_in_process(kafka_bootstrap, tmp_path, prefix, database_url) as saga:
        sku, customer = unique("sku"), unique("cust")
        await seed(kafka_bootstrap, saga.codec, sku, customer)
        oid = str(uuid.uuid4())
        await eventually(lambda: _stocked(saga, sku), what="stock seeded")
        await saga.clients["orders"].post(
            "/api/v1/orders",
            json={
                "order_id": oid,
                "customer_id": customer,
                "lines": [{"sku": sku, "quantity": 1, "unit_price_cents": 500}],
                "shipping_address": ADDRESS,
            },
        )
        await eventually(lambda: _notified(saga, oid), deadline_s=60, what="order notified")
    lines = [json.loads(line) for line in captured.getvalue().splitlines() if line.strip()]
    ended = [ln for ln in lines if ln.get("event") == "order ended" and ln.get("order_id") == oid]
    assert ended, "the orders handler logged the terminal state"
    for line in ended:
        for key in ("service", "event_type", "event_id", "correlation_id", "trace_id", "span_id"):
            assert line.get(key), f"{key} missing in {line}"
        assert line["event_type"] == "ShipmentScheduled" and len(line["trace_id"]) == 32


async def test_metrics_and_health_move(kafka_bootstrap, tmp_path, database_url):
    prefix = unique("metrics") + "."
    async with saga_in_process(kafka_bootstrap, tmp_path, prefix, database_url) as saga:
        client = saga.clients["inventory"]
        assert (await client.get("/health")).json()["status"] == "ok"
        await eventually(lambda: _ready(client), what="inventory ready")
        before = _metric(
            (await client.get("/metrics")).text, "choreo_events_consumed_total", "StockRestocked"
        )
        sku = unique("sku")
        await publish(
            saga.codec,
            KafkaConnection(kafka_bootstrap),
            [
                Draft(
                    "StockRestocked",
                    {
                        "restock_id": str(uuid.uuid4()),
                        "sku": sku,
                        "quantity": 3,
                        "restocked_at": utcnow(),
                    },
                    sku,
                )
            ],
        )

        async def moved():
            text = (await client.get("/metrics")).text
            return _metric(text, "choreo_events_consumed_total", "StockRestocked") > before

        await eventually(moved, what="consumed counter to move")
        text = (await client.get("/metrics")).text
        for name in (
            "choreo_handler_seconds_bucket",
            "choreo_consumer_lag",
            "choreo_outbox_backlog",
        ):
            assert name in text


async def _ready(client):
    return (await client.get("/ready")).status_code == 200


def _metric(text: str, name: str, label: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and f'event_type="{label}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total
