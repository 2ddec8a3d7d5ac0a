"""``choreo publish``, ``choreo tail`` and ``choreo events`` against the real broker.

Each test gets a random ``TOPIC_PREFIX`` and creates the catalogue's request topics under it;
the commands run through ``events.cli.main.main`` as a user runs them (in a worker thread, since
they call ``asyncio.run`` themselves).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from events.catalogue import Catalogue
from events.cli import main as cli
from events.cli import tail as cli_tail
from events.cli.errors import CliError
from events.cli.tail import tail
from events.codec import AvroCodec
from events.envelope import Envelope
from events.kafka import KafkaConnection
from events.topics import apply_topics
from schemas.models import OrderCancellationRequested, OrderPlaced
from tests.integration.harness import partition_ids, read_all
from tests.support import unique

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
REQUEST_TOPICS = ("orders.requests", "inventory.requests", "payments.requests")


@dataclass(frozen=True)
class Env:
    bootstrap: str
    prefix: str

    def topic(self, name: str) -> str:
        return self.prefix + name


@dataclass(frozen=True)
class Ran:
    status: int
    out: str
    err: str


Choreo = Callable[..., Awaitable[Ran]]


@pytest.fixture
async def env(kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> Env:
    prefix = f"{unique('cli')}."
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("TOPIC_PREFIX", prefix)
    catalogue = Catalogue.load().prefixed(prefix)
    specs = [catalogue.topics[prefix + name] for name in REQUEST_TOPICS]
    await apply_topics(KafkaConnection(kafka_bootstrap), specs, dead_letters=False)
    return Env(kafka_bootstrap, prefix)


@pytest.fixture
def choreo(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Choreo:
    async def run(*argv: str, stdin: bytes | None = None) -> Ran:
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        capsys.readouterr()
        status = await asyncio.to_thread(cli.main, list(argv))
        out, err = capsys.readouterr()
        return Ran(status, out, err)

    return run


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    tps = [TopicPartition(topic, p) for p in await partition_ids(bootstrap, topic)]
    # A group id avoids aiokafka's group-less coordinator, whose stop() can misbehave.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=unique("ends")
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


async def all_end_offsets(env: Env) -> dict[str, dict[int, int]]:
    return {t: await end_offsets(env.bootstrap, env.topic(t)) for t in REQUEST_TOPICS}


def codec_of(env: Env) -> AvroCodec:
    return AvroCodec(Catalogue.load().prefixed(env.prefix))


def order_payload(order_id: str, quantity: Any = 1) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "customer_id": "customer-1",
        "lines": [{"sku": "widget", "quantity": quantity, "unit_price_cents": 1500}],
        "shipping_address": {
            "name": "Ann Example",
            "line1": "1 Main Street",
            "city": "Paris",
            "postal_code": "75001",
            "country": "FR",
        },
        "placed_at": "2026-03-01T12:00:00Z",
    }


def restock(sku: str, seq: int) -> dict[str, Any]:
    return {
        "type": "StockRestocked",
        "payload": {"restock_id": str(uuid.uuid4()), "sku": sku, "quantity": seq + 1},
    }


def write_lines(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


# --------------------------------------------------------------------------- one event


async def test_one_event_lands_with_its_envelope_and_decodes(env: Env, choreo: Choreo) -> None:
    order_id = str(uuid.uuid4())
    ran = await choreo(
        "publish",
        "OrderPlaced",
        "--field",
        f"order_id={order_id}",
        "--field",
        "customer_id=42",
        "--field",
        'lines=[{"sku": "widget", "quantity": 2, "unit_price_cents": 1500}]',
        "--field",
        "shipping_address.name=Ann Example",
        "--field",
        "shipping_address.line1=1 Main Street",
        "--field",
        "shipping_address.city=Berlin",
        "--field",
        "shipping_address.postal_code=10115",
        "--field",
        "shipping_address.country=DE",
        "--field",
        "placed_at=2026-03-01T12:00:00+01:00",
    )
    assert (ran.status, ran.err) == (0, "")
    landed = re.fullmatch(r"OrderPlaced (\S+) -> (\S+)\[(\d+)\]@(\d+)\n", ran.out)
    assert landed, ran.out
    event_id, topic, partition, offset = landed.groups()
    assert topic == env.topic("orders.requests")

    (message,) = await read_all(env.bootstrap, topic, 1)
    assert (message.partition, message.offset) == (int(partition), int(offset))
    assert message.key == order_id.encode()  # the key is inferred from order_id
    envelope = Envelope.from_headers(message.headers, message.key)
    assert (envelope.event_id, envelope.event_type, envelope.schema_version) == (
        event_id,
        "OrderPlaced",
        1,
    )
    assert (envelope.producer, envelope.correlation_id) == ("choreo-cli", event_id)
    payload = OrderPlaced.model_validate(codec_of(env).decode(message.value).payload)
    assert payload.customer_id == "42"  # a string field keeps "42" as text
    assert payload.shipping_address.postal_code == "10115"
    assert payload.lines[0].quantity == 2
    assert payload.placed_at == datetime(2026, 3, 1, 11, tzinfo=UTC)


async def test_a_json_document_from_stdin_with_given_envelope_fields(
    env: Env, choreo: Choreo
) -> None:
    order_id, event_id = str(uuid.uuid4()), str(uuid.uuid4())
    before = datetime.now(UTC) - timedelta(seconds=1)
    ran = await choreo(
        "publish",
        "OrderCancellationRequested",
        "--json",
        "-",
        "--key",
        "my-key",
        "--event-id",
        event_id,
        "--correlation-id",
        "saga-7",
        "--output",
        "json",
        stdin=json.dumps({"order_id": order_id, "reason": "changed my mind"}).encode(),
    )
    assert (ran.status, ran.err) == (0, "")
    shown = json.loads(ran.out)
    assert shown["event_id"] == event_id and shown["key"] == "my-key"
    assert shown["correlation_id"] == "saga-7"
    assert shown["topic"] == env.topic("orders.requests")

    (message,) = await read_all(env.bootstrap, env.topic("orders.requests"), 1)
    assert (message.partition, message.offset) == (shown["partition"], shown["offset"])
    envelope = Envelope.from_headers(message.headers, message.key)
    assert (envelope.key, envelope.event_id, envelope.correlation_id) == (
        "my-key",
        event_id,
        "saga-7",
    )
    payload = OrderCancellationRequested.model_validate(codec_of(env).decode(message.value).payload)
    assert before <= payload.requested_at <= datetime.now(UTC)  # *_at defaults to now


# --------------------------------------------------------------------------- files


async def test_a_file_of_1000_events_lands_in_order_per_key(
    env: Env, choreo: Choreo, tmp_path: Path
) -> None:
    skus = [unique("sku") for _ in range(9)]
    customers = [unique("customer") for _ in range(4)]
    lines: list[Any] = []
    for seq in range(100):
        lines += [restock(sku, seq) for sku in skus]
        customer = customers[seq % 4]
        deposit = {"deposit_id": str(uuid.uuid4()), "customer_id": customer, "amount_cents": seq}
        lines.append({"type": "FundsDeposited", "payload": deposit})
    ran = await choreo("publish", "--file", str(write_lines(tmp_path / "events.jsonl", lines)))

    assert (ran.status, ran.err) == (0, "")
    assert ran.out.startswith("published 1,000 events in ")
    assert f"{env.topic('inventory.requests')} 900, {env.topic('payments.requests')} 100" in ran.out
    stock = await read_all(env.bootstrap, env.topic("inventory.requests"), 900)
    money = await read_all(env.bootstrap, env.topic("payments.requests"), 100)
    codec = codec_of(env)
    assert_in_order_per_key(stock, codec, "quantity", skus)
    assert_in_order_per_key(money, codec, "amount_cents", customers)
    ids = {Envelope.from_headers(m.headers, m.key).event_id for m in stock + money}
    assert len(ids) == 1000


async def test_a_file_publish_reports_one_summary_object_as_json(
    env: Env, choreo: Choreo, tmp_path: Path
) -> None:
    lines = [restock("sku-a", i) for i in range(3)]
    ran = await choreo(
        "publish",
        "--file",
        "-",
        "--output",
        "json",
        stdin=write_lines(tmp_path / "s", lines).read_bytes(),
    )
    assert (ran.status, ran.err) == (0, "")
    summary = json.loads(ran.out)
    assert summary["events"] == 3 and summary["topics"] == {env.topic("inventory.requests"): 3}
    assert summary["events_per_s"] > 0


def assert_in_order_per_key(messages: list[Any], codec: AvroCodec, field: str, keys: list[str]):
    by_key: dict[str, list[tuple[int, int, int]]] = {}
    for m in messages:
        value = codec.decode(m.value).payload[field]
        by_key.setdefault(m.key.decode(), []).append((m.partition, m.offset, value))
    assert sorted(by_key) == sorted(keys)
    for key, seen in by_key.items():
        assert len({partition for partition, _, _ in seen}) == 1, f"{key} on several partitions"
        values = [value for _, _, value in sorted(seen)]
        assert values == sorted(values) and len(set(values)) == len(values), key


def _bad_order(n: int) -> list[Any]:
    good = [{"type": "OrderPlaced", "payload": order_payload(str(uuid.uuid4()))}] * (n - 1)
    bad = {"type": "OrderPlaced", "payload": order_payload(str(uuid.uuid4()), quantity="two")}
    return [*good, bad, *good]


def _bad_line_at(n: int, line: str) -> list[Any]:
    good = [restock("sku-a", i) for i in range(999)]
    return [*good[: n - 1], line, *good[n - 1 :]]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            _bad_order(7),
            "choreo: error: line 7 (OrderPlaced): lines[0].quantity: expected int, got str 'two'",
        ),
        (
            _bad_line_at(700, json.dumps(restock("sku-a", 0) | {"payload": {"sku": "a"}})),
            "choreo: error: line 700 (StockRestocked): restock_id: required field is missing",
        ),
        (
            _bad_line_at(500, '{"type": "StockRestocked", "payload": {"sku": "a",'),
            "choreo: error: line 500: not valid JSON: Expecting property name enclosed in "
            "double quotes (column 51)",
        ),
        (
            _bad_line_at(3, '{"type": "StockRestock", "payload": {}}'),
            "choreo: error: line 3: unknown event type 'StockRestock'; did you mean StockRestocked",
        ),
    ],
    ids=["nested-field", "missing-field", "malformed-json", "unknown-type"],
)
async def test_one_bad_line_rejects_the_whole_file_and_publishes_nothing(
    env: Env, choreo: Choreo, tmp_path: Path, lines: list[Any], expected: str
) -> None:
    warm_up = [restock("sku-a", i) for i in range(5)]
    earlier = await choreo("publish", "--file", str(write_lines(tmp_path / "ok.jsonl", warm_up)))
    assert earlier.status == 0, earlier.err
    before = await all_end_offsets(env)
    assert sum(before["inventory.requests"].values()) == 5

    ran = await choreo("publish", "--file", str(write_lines(tmp_path / "bad.jsonl", lines)))

    assert ran.status == 1 and ran.out == ""
    assert ran.err.count("\n") == 1 and ran.err.startswith(expected), ran.err
    assert await all_end_offsets(env) == before


async def test_dry_run_shows_what_would_be_sent_and_sends_nothing(
    env: Env, choreo: Choreo, tmp_path: Path
) -> None:
    order_id = str(uuid.uuid4())
    before = await all_end_offsets(env)
    one = await choreo(
        "publish", "OrderPlaced", "--json", json.dumps(order_payload(order_id)), "--dry-run"
    )
    assert (one.status, one.err) == (0, "")
    assert one.out.startswith("would publish OrderPlaced ")
    assert f"-> {env.topic('orders.requests')} key={order_id} " in one.out
    assert '"placed_at":"2026-03-01T12:00:00+00:00"' in one.out

    path = write_lines(tmp_path / "dry.jsonl", [restock("sku-a", i) for i in range(3)])
    many = await choreo("publish", "--file", str(path), "--dry-run", "--output", "json")
    assert (many.status, many.err) == (0, "")
    shown = [json.loads(line) for line in many.out.splitlines()]
    assert [s["payload"]["quantity"] for s in shown] == [1, 2, 3]
    assert all(s["dry_run"] and s["partition"] is None and s["key"] == "sku-a" for s in shown)
    assert await all_end_offsets(env) == before


async def test_keys_land_on_the_partition_aiokafka_send_chooses(
    env: Env, choreo: Choreo, tmp_path: Path
) -> None:
    skus = [unique("sku") for _ in range(30)]
    path = write_lines(tmp_path / "keys.jsonl", [restock(sku, 0) for sku in skus])
    assert (await choreo("publish", "--file", str(path))).status == 0
    topic = env.topic("inventory.requests")
    by_cli = {m.key: m.partition for m in await read_all(env.bootstrap, topic, 30)}

    producer = AIOKafkaProducer(bootstrap_servers=env.bootstrap)
    await producer.start()
    try:
        for sku in skus:
            sent = await producer.send_and_wait(topic, b"x", key=sku.encode())
            assert sent.partition == by_cli[sku.encode()], sku
    finally:
        await producer.stop()
    assert len(set(by_cli.values())) > 1  # the keys did spread over the partitions


async def test_a_missing_topic_or_broker_fails_in_one_line(
    env: Env, choreo: Choreo, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ("publish", "OrderPlaced", "--json", json.dumps(order_payload(str(uuid.uuid4()))))
    monkeypatch.setenv("TOPIC_PREFIX", unique("absent") + ".")
    ran = await choreo(*args)
    assert ran.status == 1 and ran.err.count("\n") == 1
    assert "orders.requests does not exist (create it with 'choreo topics apply')" in ran.err

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    ran = await choreo(*args)
    assert ran.status == 1 and ran.err.startswith(
        "choreo: error: cannot reach Kafka at 127.0.0.1:1"
    )
    assert ran.err.count("\n") == 1, ran.err


# --------------------------------------------------------------------------- tail


async def test_tail_shows_events_published_after_it_starts_and_bad_bytes_with_why(
    env: Env, choreo: Choreo
) -> None:
    topic = env.topic("orders.requests")
    earlier = str(uuid.uuid4())
    assert (await choreo("publish", "OrderPlaced", "--json", _order(earlier))).status == 0

    out, ready = io.StringIO(), asyncio.Event()
    tailing = asyncio.create_task(
        tail(
            KafkaConnection(env.bootstrap),
            codec_of(env),
            topic,
            max_messages=3,
            out=out,
            ready=_set(ready),
        )
    )
    await asyncio.wait_for(ready.wait(), 30)
    later = str(uuid.uuid4())
    published = await choreo("publish", "OrderPlaced", "--json", _order(later))
    event_id = published.out.split()[1]
    await _send_raw(env.bootstrap, topic, [b"not avro at all", b"\xc3\x01" + bytes(8) + b"\x02"])
    assert await asyncio.wait_for(tailing, 30) == 3

    lines = out.getvalue().splitlines()
    assert not any(earlier in line for line in lines)  # from the end: the older one is not shown
    (event,) = [line for line in lines if "OrderPlaced" in line]
    assert re.match(rf"\d@\d+ OrderPlaced key={later} id={event_id} {{\"order_id\"", event)
    assert '"country":"FR"' in event
    bad = sorted(line.split(" ", 1)[1] for line in lines if "UNDECODABLE" in line)
    assert bad == [
        "UNDECODABLE key=raw-0: bad magic 6e6f, expected c301 (15 bytes)",
        "UNDECODABLE key=raw-1: unknown schema fingerprint 0000000000000000 (11 bytes)",
    ]


async def test_tail_from_the_beginning_as_json(env: Env, choreo: Choreo) -> None:
    topic = env.topic("orders.requests")
    order_id = str(uuid.uuid4())
    assert (await choreo("publish", "OrderPlaced", "--json", _order(order_id))).status == 0
    await _send_raw(env.bootstrap, topic, [b"junk"])
    out = io.StringIO()
    shown = await asyncio.wait_for(
        tail(
            KafkaConnection(env.bootstrap),
            codec_of(env),
            topic,
            from_beginning=True,
            max_messages=2,
            as_json=True,
            out=out,
            ready=lambda _: None,
        ),
        30,
    )
    assert shown == 2
    docs = {doc["key"]: doc for doc in map(json.loads, out.getvalue().splitlines())}
    assert docs[order_id]["event_type"] == "OrderPlaced" and docs[order_id]["error"] is None
    assert docs[order_id]["payload"]["order_id"] == order_id
    assert docs["raw-0"]["payload"] is None and "4 bytes" in docs["raw-0"]["error"]


async def test_tail_as_a_command_prints_as_events_arrive_and_ctrl_c_ends_it_quietly(
    env: Env, choreo: Choreo
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "events.cli",
        "tail",
        "orders.requests",  # TOPIC_PREFIX is added
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # A shell's background job may ignore SIGINT; the child must take it as Ctrl-C.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        notice = await asyncio.wait_for(process.stderr.readline(), 60)
        assert notice.decode().startswith(f"tailing {env.topic('orders.requests')} (3 partitions)")
        order_id = str(uuid.uuid4())
        assert (await choreo("publish", "OrderPlaced", "--json", _order(order_id))).status == 0
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert f" OrderPlaced key={order_id} id=" in line
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        assert await process.stderr.read() == b""  # no traceback, no "interrupted"
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_tail_failing_right_after_start_reports_the_failure(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # aiokafka's group-less consumer raises CancelledError from a stop() that follows its
    # start() at once; the tail must report its own failure, not that.
    async def refuse(*args: Any) -> None:
        raise KafkaError("refused at once")

    monkeypatch.setattr(cli_tail, "_assign_all", refuse)
    with pytest.raises(CliError, match=r"cannot tail .*refused at once"):
        await tail(KafkaConnection(env.bootstrap), codec_of(env), env.topic("orders.requests"))


def _order(order_id: str) -> str:
    return json.dumps(order_payload(order_id))


def _set(event: asyncio.Event) -> Callable[[str], None]:
    return lambda _: event.set()


async def _send_raw(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i, value in enumerate(values):
            await producer.send_and_wait(topic, value, key=f"raw-{i}".encode())
    finally:
        await producer.stop()


# --------------------------------------------------------------------------- events


async def test_events_lists_every_type_with_version_topic_and_fields(
    env: Env, choreo: Choreo
) -> None:
    ran = await choreo("events")
    assert ran.status == 0
    lines = ran.out.splitlines()
    assert len(lines) == len(Catalogue.load().event_types)
    placed = next(line for line in lines if line.startswith("OrderPlaced "))
    assert placed.startswith(f"OrderPlaced v1 -> {env.topic('orders.requests')}: order_id: uuid")
    assert "lines: array<OrderLine>" in placed
    assert "placed_at: timestamp-millis (now if omitted)" in placed
    cancelled = next(line for line in lines if line.startswith("OrderCancelled "))
    assert "failed_step: string? (optional, default null)" in cancelled


async def test_events_details_one_type_or_suggests_a_name(env: Env, choreo: Choreo) -> None:
    ran = await choreo("events", "StockRestocked")
    assert ran.status == 0
    assert ran.out.splitlines()[0] == (
        f"StockRestocked v2 (inventory) -> {env.topic('inventory.requests')}"
    )
    assert "versions: 1, 2; key: sku" in ran.out
    assert "    quantity: int  # " in ran.out

    nested = await choreo("events", "OrderPlaced")
    assert "      country: string  # " in nested.out  # a nested record's fields, indented

    wrong = await choreo("events", "StockRestock")
    assert wrong.status == 1
    assert wrong.err == (
        "choreo: error: unknown event type 'StockRestock'; did you mean StockRestocked?\n"
    )
