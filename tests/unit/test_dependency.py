"""The dependency client on httpx's MockTransport (no network): which answers are definite,
the backoff's bounds, retries with one idempotency key, and the breaker's transitions
(purgatory reads the wall clock, so recovery is a real, short wait)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY
from tenacity import RetryCallState

from events.dependency import (
    Answer,
    Dependency,
    DependencySettings,
    DependencyUnavailable,
    backoff,
    outcome_of,
)
from events.telemetry import instrument_http_client

Handler = Callable[[httpx.Request], httpx.Response]


def settings(**overrides: object) -> DependencySettings:
    values: dict[str, object] = {
        "name": f"dep-{uuid.uuid4().hex[:8]}",
        "base_url": "http://dependency.test",
        "attempts": 3,
        "backoff_initial_s": 0.001,
        "backoff_max_s": 0.002,
        "failure_threshold": 5,
        "recovery_s": 0.3,
    }
    values.update(overrides)
    return DependencySettings(**values)  # type: ignore[arg-type]


class Recorder:
    """Answers with the statuses given, in turn (the last one repeats), and keeps every
    request it saw."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return httpx.Response(status, json={"status": status})


def dependency(handler: Handler, **overrides: object) -> Dependency:
    return Dependency(settings(**overrides), transport=httpx.MockTransport(handler))


def calls(name: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "choreo_dependency_calls_total", {"dependency": name, "outcome": outcome}
    )
    return value or 0.0


def transitions(name: str, to: str) -> float:
    value = REGISTRY.get_sample_value(
        "choreo_dependency_breaker_transitions_total", {"dependency": name, "to": to}
    )
    return value or 0.0


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value("choreo_dependency_breaker_state", {"dependency": name})


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, "ok"),
        (201, "ok"),
        (400, "definite_4xx"),
        (402, "definite_4xx"),
        (404, "definite_4xx"),
        (409, "definite_4xx"),
        (422, "definite_4xx"),
        (408, "transient"),
        (429, "transient"),
        (500, "transient"),
        (503, "transient"),
    ],
)
def test_answers_are_definite_except_5xx_408_429(status, outcome):
    assert outcome_of(status) == outcome


def test_backoff_is_full_jitter_bounded_by_the_maximum():
    wait = backoff(settings(backoff_initial_s=0.1, backoff_max_s=1.0))
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    for attempt in range(1, 12):
        state.attempt_number = attempt
        ceiling = min(0.1 * 2 ** (attempt - 1), 1.0)
        waits = [wait(state) for _ in range(200)]
        assert all(0 <= w <= ceiling + 1e-9 for w in waits)
        assert max(waits) > ceiling / 2  # jittered over the whole range, not fixed


def test_settings_without_a_url_are_refused():
    with pytest.raises(ValueError, match="no base URL"):
        Dependency(settings(base_url=""))


async def test_transient_answers_are_retried_with_the_same_key():
    recorder = Recorder(503, 429, 201)
    dep = dependency(recorder)
    try:
        answer = await dep.post("/v1/things", {"amount_cents": 5}, idempotency_key="key-1")
    finally:
        await dep.close()
    assert answer == Answer(201, {"status": 201})
    assert [r.headers["Idempotency-Key"] for r in recorder.requests] == ["key-1"] * 3
    assert [r.content for r in recorder.requests] == [b'{"amount_cents":5}'] * 3
    assert calls(dep.name, "transient") == 2 and calls(dep.name, "ok") == 1
    assert dep.state == "closed"


async def test_a_definite_refusal_is_returned_at_once():
    recorder = Recorder(402)
    dep = dependency(recorder)
    try:
        answer = await dep.post("/v1/authorisations", {}, idempotency_key="k")
    finally:
        await dep.close()
    assert answer.status == 402 and not answer.ok
    assert len(recorder.requests) == 1
    assert calls(dep.name, "definite_4xx") == 1


async def test_timeouts_outlasting_the_attempts_make_the_dependency_unavailable():
    seen: list[str] = []

    def slow(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Idempotency-Key"])
        raise httpx.ReadTimeout("too slow", request=request)

    dep = dependency(slow, attempts=2, backoff_max_s=0.5)
    try:
        with pytest.raises(DependencyUnavailable) as caught:
            await dep.post("/v1/x", {}, idempotency_key="same")
    finally:
        await dep.close()
    assert seen == ["same", "same"]
    assert caught.value.dependency == dep.name
    assert caught.value.retry_after_s == 0.5  # closed breaker: one bounded backoff
    assert calls(dep.name, "timeout") == 2


async def test_connection_errors_are_transient():
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    dep = dependency(refused, attempts=1)
    try:
        with pytest.raises(DependencyUnavailable, match="ConnectError"):
            await dep.get("/v1/ledger")
    finally:
        await dep.close()
    assert calls(dep.name, "transient") == 1


async def let_through(call: Callable[[], Awaitable[Answer]], deadline_s: float = 5.0) -> Answer:
    """``call()`` again until the open breaker lets it through (it half-opens after its
    recovery time): the answer, or the error of the call that went through. The condition
    waited on is the breaker's, not the clock's."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            return await call()
        except DependencyUnavailable as exc:
            if exc.reason != "breaker open":
                raise
            if time.monotonic() > end:
                raise AssertionError(f"the breaker stayed open for {deadline_s}s") from None
        await asyncio.sleep(0.01)  # poll interval: refused calls fail fast, send nothing


async def test_the_breaker_opens_fails_fast_half_opens_and_closes():
    recorder = Recorder(503)
    dep = dependency(recorder, attempts=3, failure_threshold=5, recovery_s=0.3)
    try:
        with pytest.raises(DependencyUnavailable):
            await dep.post("/v1/x", {}, idempotency_key="a")  # 3 failures
        assert dep.state == "closed" and gauge(dep.name) == 0
        with pytest.raises(DependencyUnavailable):
            await dep.post("/v1/x", {}, idempotency_key="b")  # 2 more: open, then refused
        assert len(recorder.requests) == 5
        assert dep.state == "open" and gauge(dep.name) == 2
        assert transitions(dep.name, "open") == 1

        with pytest.raises(DependencyUnavailable) as caught:
            await dep.post("/v1/x", {}, idempotency_key="c")
        assert len(recorder.requests) == 5  # failed fast: nothing sent
        assert 0 < caught.value.retry_after_s <= 0.3 + 0.02
        assert calls(dep.name, "rejected_open") >= 2

        recorder.statuses = [201]
        answer = await let_through(lambda: dep.post("/v1/x", {}, idempotency_key="c"))
        assert answer.status == 201  # the half-open probe
        assert len(recorder.requests) == 6  # the refused tries sent nothing
        assert dep.state == "closed" and gauge(dep.name) == 0
        assert transitions(dep.name, "half-open") == 1
        assert transitions(dep.name, "closed") == 1
    finally:
        await dep.close()


async def test_a_failed_probe_opens_the_breaker_again():
    recorder = Recorder(500)
    dep = dependency(recorder, attempts=1, failure_threshold=1, recovery_s=0.2)
    try:
        with pytest.raises(DependencyUnavailable):
            await dep.post("/v1/x", {}, idempotency_key="a")
        assert dep.state == "open"
        with pytest.raises(DependencyUnavailable):
            await let_through(lambda: dep.post("/v1/x", {}, idempotency_key="a"))  # probe fails
        assert len(recorder.requests) == 2
        assert dep.state == "open"
        assert transitions(dep.name, "open") == 2
    finally:
        await dep.close()


async def test_no_client_exists_before_start_and_none_after_close():
    dep = dependency(Recorder(200))
    assert not dep.started  # created by start, never at construction
    await dep.start()
    assert dep.started
    assert (await dep.get("/health")).ok
    await dep.close()
    assert not dep.started


async def test_each_request_is_a_client_span_of_the_callers_trace_carrying_traceparent():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    recorder = Recorder(201)
    client = httpx.AsyncClient(
        base_url="http://provider.test", transport=httpx.MockTransport(recorder)
    )
    instrument_http_client(client, provider)
    try:
        with provider.get_tracer("t").start_as_current_span("handle StockReserved") as parent:
            await client.post("/v1/authorisations", json={}, headers={"Idempotency-Key": "k"})
    finally:
        await client.aclose()
        provider.shutdown()
    trace_id = f"{parent.get_span_context().trace_id:032x}"
    (sent,) = recorder.requests
    assert sent.headers["traceparent"].split("-")[1] == trace_id
    (span,) = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CLIENT]
    assert span.parent is not None and span.parent.span_id == parent.get_span_context().span_id
    assert sent.headers["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"
