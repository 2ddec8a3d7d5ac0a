"""One trace per saga, ids on every log line, metrics that move."""

from __future__ import annotations

import io
import json
import logging
import uuid

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from events.envelope import utcnow
from events.kafka import KafkaConnection
from events.logs import configure_logging
from events.publisher import Draft, publish
from tests.integration.inprocess import saga_in_process
from tests.support import eventually, unique

pytestmark = pytest.mark.integration

QUERY = "projection-query"  # the consumer name on the query projection's handling spans

ADDRESS = {
    "name": "Ada",
    "line1": "1 Main St",
    "city": "Berlin",
    "postal_code": "10115",
    "country": "DE",
}


@pytest.fixture(scope="session")
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


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


def check_one_trace_following_causation(finished, order_id: str) -> set[str]:
    root = [
        s
        for s in finished
        if s.name == "POST /api/v1/orders" and s.attributes.get("choreo.order_id") == order_id
    ]
    assert len(root) == 1
    trace_id = root[0].context.trace_id
    in_trace = [s for s in finished if s.context.trace_id == trace_id]
    handling = [s for s in in_trace if s.name.startswith("handle ")]
    by_span_id = {s.context.span_id: s for s in in_trace}
    services = {s.attributes["choreo.consumer"] for s in handling}
    for span in handling:
        parent = by_span_id.get(span.parent.span_id) if span.parent else None
        assert parent is not None, f"{span.name} has no parent in the trace"
    return {name.split(".")[-1] for name in services}


async def test_one_order_gives_one_connected_trace_across_all_services(
    kafka_bootstrap, tmp_path, spans, database_url
):
    prefix = unique("trace") + "."
    async with saga_in_process(kafka_bootstrap, tmp_path, prefix, database_url) as saga:
        sku, customer = unique("sku"), unique("cust")
        await seed(kafka_bootstrap, saga.codec, sku, customer)
        await eventually(lambda: _stocked(saga, sku), what="stock seeded")
        spans.clear()
        ok_id, bad_id = str(uuid.uuid4()), str(uuid.uuid4())
        for oid, country in ((ok_id, "DE"), (bad_id, "AQ")):
            r = await saga.clients["orders"].post(
                "/api/v1/orders",
                json={
                    "order_id": oid,
                    "customer_id": customer,
                    "lines": [{"sku": sku, "quantity": 1, "unit_price_cents": 500}],
                    "shipping_address": {**ADDRESS, "country": country},
                },
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
        await eventually(
            lambda: wanted <= _causation_edges(spans.get_finished_spans(), bad_id),
            what="the compensations' spans",
        )
        # The read side projects each order's events in the same traces.
        for oid, last in ((ok_id, "CustomerNotified"), (bad_id, "StockReleased")):
            await eventually(
                lambda oid=oid, last=last: (
                    (last, QUERY) in _causation_edges(spans.get_finished_spans(), oid)
                ),
                what=f"the query's span of {last} for {oid}",
            )
        finished = spans.get_finished_spans()

    saga = {"orders", "inventory", "payments", "shipping", "notifications"}
    # Success: the five saga services (and inventory ships), and the query's projection.
    assert check_one_trace_following_causation(finished, ok_id) == saga | {QUERY}
    # Compensation: the same trace reaches refund (payments) and release (inventory).
    assert check_one_trace_following_causation(finished, bad_id) == saga | {QUERY}
    projected = _causation_edges(finished, ok_id)
    for event_type in ("OrderCreated", "StockReserved", "PaymentCaptured", "ShipmentScheduled"):
        assert (event_type, QUERY) in projected, f"the query did not trace {event_type}"


def _causation_edges(finished, order_id):
    root = next(s for s in finished if s.attributes.get("choreo.order_id") == order_id)
    return {
        (s.attributes["choreo.event_type"], s.attributes["choreo.consumer"].split(".")[-1])
        for s in finished
        if s.context.trace_id == root.context.trace_id and s.name.startswith("handle ")
    }


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
