"""choreo's events in the schema registry wire format, against a real registry (Apicurio,
the session's ``schema_registry``) and a client no one here wrote (confluent-kafka's
``AvroSerializer``/``AvroDeserializer`` with its ``SchemaRegistryClient``):

- ``choreo schemas release`` registers every version under TopicRecordNameStrategy subjects
  and sets them to BACKWARD; the registry refuses an incompatible version that
  ``choreo schemas check`` refuses too;
- confluent-kafka decodes every event type choreo produced in registry mode (the codec of a
  registry-mode process, and ``choreo publish`` with ``SCHEMA_FORMAT=registry``);
- choreo's consumer applies events confluent-kafka's serializer wrote, with a writer schema
  of its own (a field choreo does not know);
- a registry outage: known ids are still consumed; an id never seen waits (its partition
  paused, nothing dead-lettered), and once the registry answers that it has no such id the
  event is dead-lettered with that reason.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from fastavro.utils import generate_one

from events.catalogue import Catalogue, dead_letter_topic
from events.codec import AvroCodec, UnknownSchemaError
from events.compat import check_catalogue
from events.dlq import DLQ_REASON
from events.encoding import make_codec
from events.envelope import Envelope, new_event_id, utcnow
from events.kafka import KafkaConnection
from events.schema_registry import (
    RegistryClient,
    RegistryError,
    RegistryRefused,
    register_catalogue,
    schema_text,
    subject_for,
)
from events.settings import SchemaEncoding
from events.topics import apply_topics
from infra import registry as local_registry
from infra.registry import RegistrySpec
from tests.integration.harness import (
    FIXTURE_SCHEMAS,
    applied_rows,
    ping_consumer,
    read_all,
    running,
    topic_size,
)
from tests.support import eventually, run_module, unique

pytestmark = pytest.mark.integration

CONFLICT = 409


def _fixture_catalogue(topic: str) -> Catalogue:
    return Catalogue.load(FIXTURE_SCHEMAS).retarget({"Ping": topic, "Pong": f"{topic}-pong"})


def _registry_codec(catalogue: Catalogue, url: str) -> AvroCodec:
    return make_codec(catalogue, SchemaEncoding("registry", url))


async def _send(
    bootstrap: str, topic: str, values: list[tuple[str, str, bytes]], partition: int = 0
) -> None:
    """(event type, key, value) as choreo's producers send them: envelope headers."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for event_type, key, value in values:
            env = Envelope(new_event_id(), event_type, 1, utcnow(), "test", new_event_id(), key)
            await producer.send_and_wait(
                topic, value, key=key.encode(), partition=partition, headers=env.to_headers()
            )
    finally:
        await producer.stop()


# --------------------------------------------------------------------------- release


def test_release_registers_every_version_under_its_subject_and_sets_backward(
    schema_registry: RegistrySpec, tmp_path: Path
) -> None:
    root = tmp_path / "schemas"
    shutil.copytree(Path(__file__).resolve().parents[2] / "schemas", root)
    prefix = f"{unique('rel')}."
    env = {**os.environ, "TOPIC_PREFIX": prefix, "SCHEMA_FORMAT": "single-object"}
    url = schema_registry.ccompat_url

    first = run_module(
        "events.cli", "schemas", "release", "--root", str(root), "--registry", url, env=env
    )
    again = run_module(
        "events.cli",
        "schemas",
        "release",
        "--root",
        str(root),
        env={**env, "SCHEMA_FORMAT": "registry", "SCHEMA_REGISTRY_URL": url},
    )

    assert first.returncode == 0, first.stderr
    catalogue = Catalogue.load(root).prefixed(prefix)
    registered = [line for line in first.stdout.splitlines() if line.startswith("registry")]
    assert len(registered) == len(catalogue.event_types)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("up to date") == len(catalogue.event_types)
    with RegistryClient(url) as client:
        for event_type in catalogue.event_types:
            latest = catalogue.latest(event_type)
            subject = subject_for(
                catalogue.topic_for(event_type), f"{latest.raw['namespace']}.{event_type}"
            )
            assert subject in first.stdout
            assert client.compatibility(subject) == "BACKWARD"
            for version in range(1, latest.version + 1):
                text = schema_text(catalogue.version(event_type, version))
                assert client.lookup(subject, text) is not None, (subject, version)


def test_the_registry_refuses_the_incompatible_version_schemas_check_refuses(
    schema_registry: RegistrySpec, tmp_path: Path
) -> None:
    root = tmp_path / "schemas"
    shutil.copytree(FIXTURE_SCHEMAS, root)
    topic = unique("compat")
    url = schema_registry.ccompat_url
    register_catalogue(_fixture_catalogue(topic), url)
    ping = json.loads((root / "testing" / "Ping" / "v1.avsc").read_text())
    incompatible = copy.deepcopy(ping)
    incompatible["fields"].append({"name": "colour", "type": "string"})  # no default
    (root / "testing" / "Ping" / "v2.avsc").write_text(json.dumps(incompatible))

    problems = check_catalogue(root)
    with pytest.raises(RegistryRefused) as refused:
        register_catalogue(
            Catalogue.load(root).retarget({"Ping": topic, "Pong": f"{topic}-pong"}), url
        )

    assert any("Ping/v2.avsc" in p.path and "colour" in p.message for p in problems), problems
    assert refused.value.status == CONFLICT
    assert f"{topic}-choreo.testing.Ping" in str(refused.value) and "v2" in str(refused.value)

    compatible = copy.deepcopy(ping)
    compatible["fields"].append({"name": "colour", "type": "string", "default": "red"})
    (root / "testing" / "Ping" / "v2.avsc").write_text(json.dumps(compatible))
    assert [p for p in check_catalogue(root) if "v2" in p.path] == []
    lines = register_catalogue(
        Catalogue.load(root).retarget({"Ping": topic, "Pong": f"{topic}-pong"}), url
    )
    assert any("Ping" in line and "registered v2" in line for line in lines), lines


def test_a_registry_mode_process_whose_schemas_are_not_registered_stops_at_start(
    schema_registry: RegistrySpec,
) -> None:
    catalogue = _fixture_catalogue(unique("unregistered"))
    with pytest.raises(RegistryError, match="choreo schemas release"):
        _registry_codec(catalogue, schema_registry.ccompat_url)


def test_a_registry_mode_service_with_unregistered_schemas_exits_naming_the_release(
    schema_registry: RegistrySpec, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "TOPIC_PREFIX": f"{unique('unreleased')}.",  # subjects no one registered
        "SCHEMA_FORMAT": "registry",
        "SCHEMA_REGISTRY_URL": schema_registry.ccompat_url,
        "HTTP_PORT": "0",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'notifications.db'}",
        "TRACE_EXPORTER": "none",
    }

    ran = run_module("services.notifications", env=env)

    assert ran.returncode == 1
    last = ran.stderr.strip().splitlines()[-1]
    assert last.startswith("notifications: schemas not registered at ")
    assert "choreo schemas release" in last and "Traceback" not in ran.stderr


def test_ids_the_registry_has_but_no_contract_reads_are_unknown_and_kept_apart(
    schema_registry: RegistrySpec,
) -> None:
    """What the codec makes of ids: another record (not an event type), a JSON schema, an
    id the registry does not have: UnknownSchemaError, dead-lettered with that reason."""
    topic = unique("ids")
    url = schema_registry.ccompat_url
    codec = make_codec(_fixture_catalogue(topic), SchemaEncoding("single-object", url))
    headers = {"Content-Type": "application/vnd.schemaregistry.v1+json"}
    other = {"type": "record", "name": "Other", "namespace": "x", "fields": []}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as api:
        record_id = api.post(
            f"/subjects/{topic}-x.Other/versions", json={"schema": json.dumps(other)}
        ).json()["id"]
        json_schema = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"}
        answer = api.post(
            f"/subjects/{topic}-json/versions",
            json={"schema": json.dumps(json_schema), "schemaType": "JSON"},
        )
        assert answer.status_code == 200, answer.text
        json_id = answer.json()["id"]

    def framed(schema_id: int) -> bytes:
        return b"\x00" + schema_id.to_bytes(4, "big")

    with pytest.raises(UnknownSchemaError, match="no event type of the catalogue"):
        codec.decode(framed(record_id))
    with pytest.raises(UnknownSchemaError, match="JSON schema, not Avro"):
        codec.decode(framed(json_id))
    with pytest.raises(UnknownSchemaError, match="not in the registry"):
        codec.decode(framed(2_000_000_000))
    assert codec.registry.cached_ids == frozenset()  # nothing kept for an unreadable id


# --------------------------------------------------------------------------- interop


async def test_confluent_kafka_decodes_every_event_type_choreo_writes_in_registry_mode(
    schema_registry: RegistrySpec, kafka_bootstrap: str
) -> None:
    import confluent_kafka.schema_registry as sr
    import confluent_kafka.schema_registry.avro as avro
    from confluent_kafka.serialization import MessageField, SerializationContext

    prefix = f"{unique('interop')}."
    catalogue = Catalogue.load().prefixed(prefix)
    url = schema_registry.ccompat_url
    register_catalogue(catalogue, url)
    await apply_topics(
        KafkaConnection(kafka_bootstrap), list(catalogue.topics.values()), dead_letters=False
    )
    codec = _registry_codec(catalogue, url)
    by_topic: dict[str, list[tuple[str, str, bytes]]] = {}
    payloads = {}
    for event_type in catalogue.event_types:
        payloads[event_type] = generate_one(catalogue.latest(event_type).parsed)
        value = codec.encode(event_type, payloads[event_type])
        by_topic.setdefault(catalogue.topic_for(event_type), []).append(
            (event_type, event_type, value)
        )
    for topic, values in by_topic.items():
        await _send(kafka_bootstrap, topic, values)

    deserializer = avro.AvroDeserializer(sr.SchemaRegistryClient({"url": url}))
    seen = {}
    for topic, values in by_topic.items():
        for message in await read_all(kafka_bootstrap, topic, len(values)):
            decoded = deserializer(message.value, SerializationContext(topic, MessageField.VALUE))
            event_type = dict(message.headers)["event-type"].decode()
            seen[event_type] = decoded
            assert message.value[0] == 0
            assert decoded == codec.decode(message.value).payload

    assert sorted(seen) == catalogue.event_types
    for event_type, decoded in seen.items():
        assert set(decoded) == set(payloads[event_type])


async def test_confluent_kafka_decodes_what_choreo_publish_sends_in_registry_mode(
    schema_registry: RegistrySpec, kafka_bootstrap: str
) -> None:
    import confluent_kafka.schema_registry as sr
    import confluent_kafka.schema_registry.avro as avro
    from confluent_kafka.serialization import MessageField, SerializationContext

    prefix = f"{unique('publish')}."
    catalogue = Catalogue.load().prefixed(prefix)
    url = schema_registry.ccompat_url
    register_catalogue(catalogue, url)
    topic = catalogue.topic_for("OrderPlaced")
    await apply_topics(
        KafkaConnection(kafka_bootstrap), [catalogue.topics[topic]], dead_letters=False
    )
    payload = {
        "order_id": "0b7c2a4e-8f51-4a43-9d6e-2b3f1c0d9e8a",
        "customer_id": "42",
        "lines": [{"sku": "widget", "quantity": 2, "unit_price_cents": 1500}],
        "shipping_address": {
            "name": "Ann Example",
            "line1": "1 Main Street",
            "city": "Berlin",
            "postal_code": "10115",
            "country": "DE",
        },
        "placed_at": "2026-03-01T12:00:00+01:00",
    }
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "TOPIC_PREFIX": prefix,
        "SCHEMA_FORMAT": "registry",
        "SCHEMA_REGISTRY_URL": url,
    }

    ran = run_module("events.cli", "publish", "OrderPlaced", "--json", json.dumps(payload), env=env)

    assert ran.returncode == 0, ran.stderr
    (message,) = await read_all(kafka_bootstrap, topic, 1)
    decoded = avro.AvroDeserializer(sr.SchemaRegistryClient({"url": url}))(
        message.value, SerializationContext(topic, MessageField.VALUE)
    )
    assert message.value[0] == 0
    assert decoded["order_id"] == payload["order_id"]
    assert decoded["lines"] == payload["lines"]
    assert decoded["placed_at"].isoformat() == "2026-03-01T11:00:00+00:00"


@pytest.mark.parametrize("headers", ["choreo", "cloudevents"])
async def test_choreo_applies_events_confluent_kafka_serialized_with_its_own_writer_schema(
    schema_registry: RegistrySpec, kafka_bootstrap: str, new_topic: Any, new_db: Any, headers: str
) -> None:
    """A foreign producer: confluent-kafka's AvroSerializer registers its own text of Ping
    (a field more, with a default: BACKWARD lets it in) and frames the bytes; the headers
    are choreo's envelope, or only the CloudEvents binary-mode ones (the SDK's to_binary)."""
    import confluent_kafka.schema_registry as sr
    import confluent_kafka.schema_registry.avro as avro
    from cloudevents.http import CloudEvent
    from cloudevents.kafka import to_binary
    from confluent_kafka.serialization import MessageField, SerializationContext

    topic = await new_topic(partitions=1)
    catalogue = _fixture_catalogue(topic)
    url = schema_registry.ccompat_url
    register_catalogue(catalogue, url)  # Ping v1, BACKWARD: the foreign version must fit
    foreign = copy.deepcopy(catalogue.latest("Ping").raw)
    foreign.pop("doc", None)
    foreign["fields"].insert(0, {"name": "origin", "type": "string", "default": "elsewhere"})
    serializer = avro.AvroSerializer(
        sr.SchemaRegistryClient({"url": url}),
        json.dumps(foreign),
        conf={"subject.name.strategy": sr.topic_record_subject_name_strategy},
    )
    context = SerializationContext(topic, MessageField.VALUE)
    values = [
        serializer({"origin": "java", "aggregate_id": "foreign", "seq": s, "note": ""}, context)
        for s in range(3)
    ]
    if headers == "choreo":
        await _send(kafka_bootstrap, topic, [("Ping", "foreign", v) for v in values])
    else:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for value in values:
                attributes = {
                    "type": "Ping",
                    "source": "https://elsewhere.example/java-producer",
                    "datacontenttype": "application/avro",
                    "partitionkey": "foreign",
                }
                message = to_binary(CloudEvent(attributes, value), data_marshaller=lambda b: b)
                assert "event-type" not in message.headers
                await producer.send_and_wait(
                    topic, message.value, key=b"foreign", headers=list(message.headers.items())
                )
        finally:
            await producer.stop()

    db = await new_db("service")
    # A single-object process: it writes C3 01, and reads registry-framed events too.
    codec = make_codec(catalogue, SchemaEncoding("single-object", url))
    consumer = ping_consumer(
        unique("foreign"), topic, db=db, codec=codec, bootstrap=kafka_bootstrap
    )
    async with running(consumer):
        await eventually(lambda: _rows(db, 3), what="the foreign events applied")

    assert await applied_rows(db) == [("foreign", 0), ("foreign", 1), ("foreign", 2)]
    assert consumer.stats.dead_lettered == 0
    assert len(codec.registry.cached_ids) == 1  # one fetch for the three events


async def _rows(db: Any, n: int) -> bool:
    return len(await applied_rows(db)) >= n


# --------------------------------------------------------------------------- outage


async def test_a_registry_outage_stops_no_known_id_and_dead_letters_no_valid_event(
    kafka_bootstrap: str, new_topic: Any, new_db: Any, tmp_path: Path
) -> None:
    spec = local_registry.private_spec(tmp_path / "registry")
    topic = await new_topic(partitions=2)
    catalogue = _fixture_catalogue(topic)
    db = await new_db("service")
    try:
        local_registry.up(spec)
        register_catalogue(catalogue, spec.ccompat_url)
        writer = _registry_codec(catalogue, spec.ccompat_url)
        reader = make_codec(catalogue, SchemaEncoding("single-object", spec.ccompat_url))
        consumer = ping_consumer(
            unique("outage"),
            topic,
            db=db,
            codec=reader,
            bootstrap=kafka_bootstrap,
            commit_interval_ms=100,
        )

        def ping(key: str, seq: int) -> tuple[str, str, bytes]:
            value = writer.encode("Ping", {"aggregate_id": key, "seq": seq, "note": ""})
            return ("Ping", key, value)

        async with running(consumer):
            await _send(kafka_bootstrap, topic, [ping("k", 0)], partition=0)
            await eventually(lambda: _rows(db, 1), what="an event read with the registry up")
            # In a thread: the consumer's event loop keeps running (heartbeats, fetches).
            await asyncio.to_thread(local_registry.down, spec)
            assert not (await asyncio.to_thread(local_registry.status, spec)).running

            # Known id: read from the cache. An id never seen waits on partition 1 with the
            # event behind it (another key: a dead letter's key is blocked); partition 0 flows.
            body = writer.encode("Ping", {"aggregate_id": "u", "seq": 50, "note": ""})[5:]
            unknown = ("Ping", "u", b"\x00" + (987_654).to_bytes(4, "big") + body)
            await _send(kafka_bootstrap, topic, [unknown, ping("v", 51)], partition=1)
            await _send(kafka_bootstrap, topic, [ping("k", s) for s in (1, 2)], partition=0)
            await eventually(lambda: _rows(db, 3), what="known ids read, registry down")
            await eventually(
                lambda: TopicPartition(topic, 1) in consumer.paused, what="partition 1 waits"
            )
            assert ("v", 51) not in await applied_rows(db)
            assert consumer.stats.dead_lettered == 0

            # Back, in memory: it says the id does not exist.
            await asyncio.to_thread(local_registry.up, spec)
            await eventually(lambda: consumer.stats.dead_lettered == 1, what="the dead letter")
            await eventually(lambda: _rows(db, 4), what="the event behind it applied")
    finally:
        local_registry.down(spec)

    assert sorted(await applied_rows(db)) == [("k", 0), ("k", 1), ("k", 2), ("v", 51)]
    (letter,) = await read_all(kafka_bootstrap, dead_letter_topic(topic), 1)
    reason = dict(letter.headers)[DLQ_REASON].decode()
    assert "schema id 987654" in reason and "not in the registry" in reason
    assert await topic_size(kafka_bootstrap, dead_letter_topic(topic)) == 1


async def test_a_projection_waits_for_the_registry_and_skips_no_valid_event(
    kafka_bootstrap: str, new_topic: Any, new_db: Any, tmp_path: Path
) -> None:
    """The read side meets an id it never saw while the registry is down: its runner stalls
    (nothing applied, nothing counted undecodable) and, the registry back (file storage:
    the same ids), applies every event. The topic starts in single-object encoding (the
    runner applies those first, without a registry), then moves to the registry format."""
    from events.projection import ProjectionRunner
    from tests.integration.test_projection_replay import (
        counts_projection,
        expected,
        live,
        produce,
        rows,
    )

    spec = local_registry.private_spec(tmp_path / "registry", storage="file")
    topic = await new_topic(partitions=2)
    catalogue = _fixture_catalogue(topic)
    producer_db, read_db = await new_db("producer"), await new_db("read")
    aggregates = ["a", "b", "c"]
    try:
        await asyncio.to_thread(local_registry.up, spec)
        register_catalogue(catalogue, spec.ccompat_url)
        writer = _registry_codec(catalogue, spec.ccompat_url)
        reader = make_codec(catalogue, SchemaEncoding("single-object", spec.ccompat_url))
        runner = ProjectionRunner(
            counts_projection(topic), read_db, reader, KafkaConnection(kafka_bootstrap)
        )
        written = await produce(kafka_bootstrap, producer_db, reader, aggregates, 5)
        async with live(runner):
            await eventually(lambda: runner.applied >= len(written), what="single-object read")
            await asyncio.to_thread(local_registry.down, spec)
            written += await produce(kafka_bootstrap, producer_db, writer, aggregates, 5, start=5)
            await eventually(
                lambda: "schema registry unavailable" in (runner.last_error or ""),
                what="the runner stalled on the registry",
            )
            assert runner.applied == 15 and runner.undecodable == 0
            await asyncio.to_thread(local_registry.up, spec)
            await eventually(lambda: runner.applied >= len(written), what="all applied")
            assert await rows(read_db, runner.store) == expected(written)
            assert runner.undecodable == 0
    finally:
        await asyncio.to_thread(local_registry.down, spec)
