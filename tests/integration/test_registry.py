"""The local schema registry (Apicurio Registry from its Maven Central release) through its
Confluent-compatible API: schemas registered and read back by id, BACKWARD compatibility
enforced, and the lifecycle (up, status, down) from Python and from ``choreo registry``.

Every registry here has a home in a tmp dir and a free port; no Kafka is involved."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.broker import free_port
from infra.registry import RegistryError, RegistrySpec, down, private_spec, status, up
from tests.support import run_module, unique

pytestmark = [pytest.mark.integration, pytest.mark.no_database]

CONTENT_TYPE = {"Content-Type": "application/vnd.schemaregistry.v1+json"}
CONFLICT = 409  # the Confluent API's status (and error_code) for an incompatible schema


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistrySpec]:
    spec = private_spec(tmp_path_factory.mktemp("registry"))
    try:
        up(spec)
        yield spec
    finally:
        down(spec)


@pytest.fixture
def api(registry: RegistrySpec) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=registry.ccompat_url, headers=CONTENT_TYPE, timeout=10) as client:
        yield client


def _record(name: str, *fields: dict[str, Any]) -> str:
    record = {"type": "record", "name": name, "namespace": "choreo.test", "fields": fields}
    return json.dumps(record)


def _subject(name: str) -> str:
    # TopicRecordNameStrategy's form (<topic>-<record full name>), as choreo will register.
    return f"{unique('topic')}-choreo.test.{name}"


def test_a_registered_avro_schema_reads_back_by_its_id(api: httpx.Client) -> None:
    schema = _record("OrderPlaced", {"name": "order_id", "type": "string"})
    subject = _subject("OrderPlaced")

    registered = api.post(f"/subjects/{subject}/versions", json={"schema": schema})
    assert registered.status_code == 200, registered.text
    schema_id = registered.json()["id"]
    by_id = api.get(f"/schemas/ids/{schema_id}")
    again = api.post(f"/subjects/{subject}/versions", json={"schema": schema})
    latest = api.get(f"/subjects/{subject}/versions/latest")

    assert by_id.status_code == 200, by_id.text
    assert json.loads(by_id.json()["schema"]) == json.loads(schema)
    assert by_id.json().get("schemaType", "AVRO") == "AVRO"
    assert again.json()["id"] == schema_id  # the same schema again is no new version
    assert latest.json()["version"] == 1 and latest.json()["id"] == schema_id
    assert subject in api.get("/subjects").json()


def test_backward_compatibility_refuses_an_incompatible_version(api: httpx.Client) -> None:
    subject = _subject("PaymentTaken")
    first = _record("PaymentTaken", {"name": "amount", "type": "long"})
    # A new field without a default: a reader of this version cannot read old events.
    incompatible = _record(
        "PaymentTaken", {"name": "amount", "type": "long"}, {"name": "currency", "type": "string"}
    )
    # The same field with a default: old events read with "EUR".
    compatible = _record(
        "PaymentTaken",
        {"name": "amount", "type": "long"},
        {"name": "currency", "type": "string", "default": "EUR"},
    )
    assert api.post(f"/subjects/{subject}/versions", json={"schema": first}).status_code == 200

    config = api.put(f"/config/{subject}", json={"compatibility": "BACKWARD"})
    check = api.post(
        f"/compatibility/subjects/{subject}/versions/latest", json={"schema": incompatible}
    )
    refused = api.post(f"/subjects/{subject}/versions", json={"schema": incompatible})
    accepted = api.post(f"/subjects/{subject}/versions", json={"schema": compatible})

    assert config.status_code == 200, config.text
    assert api.get(f"/config/{subject}").json()["compatibilityLevel"] == "BACKWARD"
    assert check.json()["is_compatible"] is False
    assert refused.status_code == CONFLICT, refused.text
    assert refused.json()["error_code"] == CONFLICT
    assert "currency" in refused.json()["message"]
    assert accepted.status_code == 200, accepted.text
    assert api.get(f"/subjects/{subject}/versions").json() == [1, 2]


def test_unknown_ids_and_subjects_are_404_with_the_confluent_error_body(
    api: httpx.Client,
) -> None:
    missing_id = api.get("/schemas/ids/987654")
    missing_subject = api.get(f"/subjects/{_subject('Nothing')}/versions/latest")

    assert missing_id.status_code == 404
    assert missing_id.json()["error_code"] == 40403  # schema not found
    assert missing_subject.status_code == 404
    assert missing_subject.json()["error_code"] == 40401  # subject not found


def test_up_again_is_a_no_op_and_down_stops_it(tmp_path: Path) -> None:
    spec = private_spec(tmp_path)
    assert not status(spec).running and status(spec).pid is None

    first = up(spec)
    again = up(spec)
    stopped = down(spec)

    assert first.running and first.pid is not None and first.storage == "memory"
    assert again.pid == first.pid
    assert stopped
    after = status(spec)
    assert not after.running and after.pid is None
    assert not spec.pid_file.exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{spec.url}/health/ready", timeout=2)
    assert down(spec) is False  # nothing left to stop


def test_file_storage_keeps_schemas_across_a_restart(tmp_path: Path) -> None:
    spec = private_spec(tmp_path, storage="file")
    schema = _record("Kept", {"name": "n", "type": "int"})
    try:
        assert up(spec).storage == "file"
        schema_id = httpx.post(
            f"{spec.ccompat_url}/subjects/kept/versions",
            json={"schema": schema},
            headers=CONTENT_TYPE,
        ).json()["id"]
        down(spec)

        up(spec)
        back = httpx.get(f"{spec.ccompat_url}/schemas/ids/{schema_id}")
    finally:
        down(spec)

    assert json.loads(back.json()["schema"]) == json.loads(schema)
    assert any(spec.data_dir.iterdir())


def test_a_port_in_use_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        spec = RegistrySpec(home=tmp_path, port=taken.getsockname()[1])

        with pytest.raises(RegistryError, match=f"port {spec.port} .* already in use"):
            up(spec)

    assert status(spec).pid is None


def _choreo(tmp_path: Path, port: int, *args: str) -> tuple[int, str, str]:
    env = {
        **os.environ,
        "CHOREO_REGISTRY_HOME": str(tmp_path / "home"),
        "CHOREO_REGISTRY_PORT": str(port),
    }
    done = run_module("services.tools.stack", "registry", *args, env=env)
    return done.returncode, done.stdout, done.stderr


def test_choreo_registry_up_status_down(tmp_path: Path) -> None:
    port = free_port()
    try:
        before = _choreo(tmp_path, port, "status")
        started = _choreo(tmp_path, port, "up")
        running = _choreo(tmp_path, port, "status", "--output", "json")
        other_storage = _choreo(tmp_path, port, "up", "--storage", "file")
    finally:
        stopped = _choreo(tmp_path, port, "down")
    after = _choreo(tmp_path, port, "status")

    assert before[0] == 3 and "stopped" in before[1]
    assert started[0] == 0, started
    assert f"http://127.0.0.1:{port}/apis/ccompat/v7" in started[1]
    assert running[0] == 0, running
    doc = json.loads(running[1])
    assert doc["running"] is True and doc["storage"] == "memory" and doc["pid"] > 0
    assert other_storage[0] == 1
    assert other_storage[2].count("\n") == 1 and "runs with memory storage" in other_storage[2]
    assert stopped == (0, "schema registry stopped\n", "")
    assert after[0] == 3


def test_choreo_registry_with_a_bad_port_setting_fails_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "CHOREO_REGISTRY_PORT": "eighty"}
    done = run_module("services.tools.stack", "registry", "status", env=env)

    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "CHOREO_REGISTRY_PORT" in done.stderr
    assert "Traceback" not in done.stderr


def test_confluent_serializers_round_trip_through_the_registry(registry: RegistrySpec) -> None:
    """A client no one here wrote: confluent-kafka's AvroSerializer registers under
    TopicRecordNameStrategy and writes the wire format (magic 0, 4-byte id); its
    AvroDeserializer, with a fresh client, decodes by that id; BACKWARD refuses through it."""
    # confluent-kafka's [avro,schemaregistry] extras: a dev dependency, for interop tests.
    import confluent_kafka.schema_registry as sr
    import confluent_kafka.schema_registry.avro as avro
    from confluent_kafka.serialization import MessageField, SerializationContext

    topic = unique("orders.events")
    context = SerializationContext(topic, MessageField.VALUE)
    fields = [{"name": "order_id", "type": "string"}, {"name": "qty", "type": "int"}]
    v1 = _record("OrderPlaced", *fields)
    added = {"name": "note", "type": "string"}
    client = sr.SchemaRegistryClient({"url": registry.ccompat_url})
    serializer = avro.AvroSerializer(
        client,
        v1,
        conf={"subject.name.strategy": sr.topic_record_subject_name_strategy},
    )

    data = serializer({"order_id": "o-1", "qty": 3}, context)
    schema_id = int.from_bytes(data[1:5], "big")
    subject = f"{topic}-choreo.test.OrderPlaced"
    decoded = avro.AvroDeserializer(sr.SchemaRegistryClient({"url": registry.ccompat_url}))(
        data, context
    )
    client.set_compatibility(subject, "BACKWARD")
    with pytest.raises(sr.SchemaRegistryError) as refused:
        client.register_schema(subject, sr.Schema(_record("OrderPlaced", *fields, added), "AVRO"))
    with_default = _record("OrderPlaced", *fields, {**added, "default": ""})
    client.register_schema(subject, sr.Schema(with_default, "AVRO"))
    as_v2 = avro.AvroDeserializer(client, with_default)(data, context)

    assert data[0] == 0
    assert client.get_subjects().count(subject) == 1
    assert client.get_latest_version(subject).version == 2
    assert json.loads(client.get_schema(schema_id).schema_str) == json.loads(v1)
    assert decoded == {"order_id": "o-1", "qty": 3}
    assert refused.value.http_status_code == CONFLICT
    assert as_v2 == {"order_id": "o-1", "qty": 3, "note": ""}
