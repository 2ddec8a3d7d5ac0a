"""A poison row in a service's outbox no longer holds the saga up: an ordinary order placed
behind it completes, and the poison waits in quarantine for an operator."""

from __future__ import annotations

import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.partitioner import DefaultPartitioner

from events.envelope import utcnow
from events.outbox_admin import list_rows
from schemas.models import Address, OrderCreated, OrderLine
from tests.integration.inprocess import saga_in_process
from tests.integration.test_observability import ADDRESS, _stocked, seed
from tests.support import eventually, unique

pytestmark = pytest.mark.integration

LIMIT = 20_000  # orders.events' max.message.bytes in this test; saga events are < 2 KB


async def limit_topic(bootstrap: str, topic: str, limit: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": str(limit)})]
        )
    finally:
        await admin.close()


async def test_an_ordinary_order_behind_a_poison_row_completes(
    kafka_bootstrap, tmp_path, database_url
):
    prefix = unique("poison") + "."
    async with saga_in_process(kafka_bootstrap, tmp_path, prefix, database_url) as saga:
        await limit_topic(kafka_bootstrap, f"{prefix}orders.events", LIMIT)
        sku, customer = unique("sku"), unique("cust")
        await seed(kafka_bootstrap, saga.codec, sku, customer)

        await eventually(lambda: _stocked(saga, sku), what="stock and price seeded")

        # A row under the platform's size limit but over this topic's: Kafka refuses it. Its
        # key shares the order's partition, so each batch holding both fails as a whole.
        orders = saga.contexts["orders"]
        ok_id = str(uuid.uuid4())
        poison_id = same_partition(
            ok_id, orders.codec.catalogue.topics[f"{prefix}orders.events"].partitions
        )
        payload = OrderCreated(
            order_id=poison_id,
            customer_id=customer,
            lines=[OrderLine(sku=sku, quantity=1, unit_price_cents=1)],
            total_cents=1,
            shipping_address=Address(**ADDRESS),
            created_at=utcnow(),
        ).to_avro()
        payload["shipping_address"]["name"] = "n" * 2 * LIMIT
        async with orders.uow() as uow:
            uow.emit_raw("OrderCreated", payload, key=poison_id)
            await uow.commit()

        r = await saga.clients["orders"].post(
            "/api/v1/orders",
            json={
                "order_id": ok_id,
                "customer_id": customer,
                "lines": [{"sku": sku, "quantity": 1, "unit_price_cents": 500}],
                "shipping_address": ADDRESS,
            },
        )
        assert r.status_code == 201, r.text

        async def status() -> str:
            return str(
                (await saga.clients["orders"].get(f"/api/v1/orders/{ok_id}")).json()["status"]
            )

        await eventually(
            lambda: _is(status, "COMPLETED"), deadline_s=60, what="the order behind it completed"
        )
        (quarantined,) = await list_rows(orders.db, "orders")
        assert (quarantined.key, quarantined.event_type) == (poison_id, "OrderCreated")
        assert quarantined.error_type == "MessageSizeTooLargeError"
        assert orders.relay.quarantined == 1


def same_partition(key: str, partitions: int) -> str:
    """Another order id that Kafka's default partitioner puts beside ``key``."""
    ids = list(range(partitions))
    wanted = DefaultPartitioner()(key.encode(), ids, ids)
    while True:
        other = str(uuid.uuid4())
        if DefaultPartitioner()(other.encode(), ids, ids) == wanted:
            return other


async def _is(status, wanted: str) -> bool:
    return await status() == wanted
