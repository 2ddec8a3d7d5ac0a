"""The runtime publisher (events.publisher) on a real broker: every event sent is reported
once, where it landed, and a failed send says how many events were acknowledged."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from events.catalogue import Catalogue
from events.codec import AvroCodec
from events.envelope import Envelope, utcnow
from events.kafka import KafkaConnection
from events.publisher import Draft, Landed, PublishError, prepare, publish, send_all
from events.topics import apply_topics
from tests.integration.harness import read_all
from tests.support import unique

pytestmark = pytest.mark.integration

TOPIC = "inventory.requests"


async def _codec(bootstrap: str) -> AvroCodec:
    prefix = f"{unique('pub')}."
    catalogue = Catalogue.load().prefixed(prefix)
    await apply_topics(
        KafkaConnection(bootstrap), [catalogue.topics[prefix + TOPIC]], dead_letters=False
    )
    return AvroCodec(catalogue)


def _restock(sku: str, quantity: int) -> Draft:
    payload = {
        "restock_id": str(uuid.uuid4()),
        "sku": sku,
        "quantity": quantity,
        "restocked_at": utcnow(),
    }
    return Draft("StockRestocked", payload, sku)


async def test_every_event_is_reported_once_where_it_landed(kafka_bootstrap: str) -> None:
    codec = await _codec(kafka_bootstrap)
    skus = [unique("sku") for _ in range(7)]
    # Enough events that each partition fills several batches while earlier ones are in flight.
    drafts = [_restock(skus[i % 7], i) for i in range(3_000)]
    records = prepare(codec, drafts, "test-publisher")
    reported: list[Landed] = []

    sent = await send_all(
        KafkaConnection(kafka_bootstrap), records, reported.append, client_id="test-publisher"
    )

    assert sent == len(records) == len(reported)
    assert Counter(id(landed.record) for landed in reported) == Counter(id(r) for r in records)
    topic = records[0].topic
    stored = await read_all(kafka_bootstrap, topic, len(records))
    at = {(m.partition, m.offset): m for m in stored}
    for landed in reported:
        message = at[(landed.partition, landed.offset)]
        assert landed.topic == topic
        assert Envelope.from_headers(message.headers, message.key) == landed.record.envelope
        assert message.value == landed.record.value
    # Within a partition, reports come in offset order, and offsets follow the input order.
    for partition in {landed.partition for landed in reported}:
        offsets = [landed.offset for landed in reported if landed.partition == partition]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    for sku in skus:  # a key's events landed in the order given
        landed_in_order = sorted(
            (landed for landed in reported if landed.record.envelope.key == sku),
            key=lambda landed: landed.offset,
        )
        quantities = [
            codec.decode(at[(landed.partition, landed.offset)].value).payload["quantity"]
            for landed in landed_in_order
        ]
        assert quantities == [d.payload["quantity"] for d in drafts if d.key == sku]


async def test_publish_says_where_each_draft_landed_in_draft_order(kafka_bootstrap: str) -> None:
    codec = await _codec(kafka_bootstrap)
    drafts = [_restock(unique("sku"), i + 1) for i in range(20)]
    published = await publish(
        codec, KafkaConnection(kafka_bootstrap), drafts, producer="test-publisher"
    )
    assert [p.key for p in published] == [d.key for d in drafts]
    stored = await read_all(kafka_bootstrap, published[0].topic, len(drafts))
    at = {(m.partition, m.offset): m for m in stored}
    for p, draft in zip(published, drafts, strict=True):
        message = at[(p.partition, p.offset)]
        envelope = Envelope.from_headers(message.headers, message.key)
        assert (envelope.event_id, envelope.producer) == (p.event_id, "test-publisher")
        assert codec.decode(message.value).payload["quantity"] == draft.payload["quantity"]


async def test_a_failed_send_says_how_many_events_were_acknowledged() -> None:
    codec = AvroCodec(Catalogue.load())
    records = prepare(codec, [_restock("sku-a", 1), _restock("sku-b", 2)], "test-publisher")
    unreachable = "127.0.0.1:1"  # nothing listens on port 1
    with pytest.raises(PublishError, match=r"^cannot publish to 127\.0\.0\.1:1: .*\(0 of 2 events"):
        await send_all(KafkaConnection(unreachable), records, client_id="test-publisher")


async def test_nothing_to_send_sends_nothing() -> None:
    assert await send_all(KafkaConnection("127.0.0.1:1"), [], client_id="test-publisher") == 0
