"""A client for one external HTTP system a handler calls (the payment provider, the carrier):
timeouts, retries with the same idempotency key, and a circuit breaker, with metrics and
client spans.

Each call is tried up to ``attempts`` times (tenacity: exponential backoff with full jitter,
bounded by ``backoff_max_s``), every try with the SAME ``Idempotency-Key``, so a try that
timed out after the other side acted is answered with that first result, never acted on
twice. 2xx and 4xx answers (but 408 and 429) are definite and returned as they are; 5xx,
408, 429, timeouts and connection errors are transient. Each transient try counts against
the dependency's breaker; ``failure_threshold`` of them in a row open it, and while it is
open calls fail at once with ``DependencyUnavailable`` (``retry_after_s``: the time until it
half-opens). The first call after that is the probe: it closes the breaker or opens it again.

``DependencyUnavailable`` is not the event's fault: the consumer (events.consumer) pauses
the event's partition instead of retrying or dead-lettering it.

The breaker is purgatory's ``AsyncCircuitBreakerFactory``: asyncio-native, typed, no
dependencies of its own, and its event hooks feed the metrics below; aiobreaker, the other
asyncio breaker, has been unmaintained since 2021. Its clock is the wall clock
(``time.time``), read by purgatory itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.messages.events import ContextChanged
from purgatory.domain.model import Context, OpenedState
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from events.metrics import (
    DEPENDENCY_BREAKER_STATE,
    DEPENDENCY_BREAKER_TRANSITIONS,
    DEPENDENCY_CALL_SECONDS,
    DEPENDENCY_CALLS,
)
from events.pausing import DependencyUnavailable
from events.telemetry import instrument_http_client

__all__ = [
    "CALLING_OUT_BATCH",
    "Answer",
    "Dependency",
    "DependencySettings",
    "DependencyUnavailable",
    "http_url",
]

log = logging.getLogger(__name__)

# purgatory's state names -> ours (the contract's), and the gauge's value for each.
_STATES = {"closed": "closed", "half-opened": "half-open", "opened": "open"}
STATE_VALUES = {"closed": 0, "half-open": 1, "open": 2}
# Answers that say "not now" rather than "no": worth another try with the same key.
TRANSIENT_STATUSES = frozenset({408, 429})
# Smallest pause before a retry after an open breaker: purgatory half-opens strictly
# after opened_at + recovery, so resuming exactly then would find it still open.
_MIN_RETRY_AFTER_S = 0.05
# A consumer's batch while its handlers call out: each call waits inside the batch's
# transaction, and a batch rolled back for an outage calls again (same keys, first answers)
# for every event in it.
CALLING_OUT_BATCH = 50
# The settings a service declares per dependency, after its prefix (PAYMENT_PROVIDER_...).
_PREFIXED = ("timeout_s", "attempts", "failure_threshold", "recovery_s")


@dataclass(frozen=True)
class DependencySettings:
    name: str  # "provider" | "carrier": metric label, span name, log field
    base_url: str
    timeout_s: float = 2.0  # per attempt
    attempts: int = 3  # tries per call, same idempotency key each time
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 2.0  # exponential with full jitter, bounded
    failure_threshold: int = 5  # consecutive failed attempts that open the breaker
    recovery_s: float = 5.0  # open -> half-open after this

    @classmethod
    def from_prefix(cls, settings: object, prefix: str, name: str) -> DependencySettings | None:
        """A service's settings ``<prefix>_url``, ``<prefix>_timeout_s``, ``_attempts``,
        ``_failure_threshold`` and ``_recovery_s`` (its environment's ``<PREFIX>_URL``, ...)
        as dependency ``name``'s; None when the URL is empty: the service runs without it."""
        url = getattr(settings, f"{prefix}_url")
        if not url:
            return None
        values = {field: getattr(settings, f"{prefix}_{field}") for field in _PREFIXED}
        return cls(name=name, base_url=str(url), **values)


def http_url(value: str, variable: str) -> str:
    """A dependency's base URL as set in ``variable``: no surrounding blanks or trailing
    slash, http:// or https://, or empty (no dependency)."""
    value = value.strip().rstrip("/")
    if value and not value.startswith(("http://", "https://")):
        raise ValueError(f"{variable} must be an http:// or https:// URL, not {value!r}")
    return value


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class _Transient(Exception):
    """One try that may succeed if repeated (raised inside the breaker: it counts)."""


def is_transient_status(status: int) -> bool:
    return status >= 500 or status in TRANSIENT_STATUSES


def outcome_of(status: int) -> str:
    """The calls counter's outcome for an HTTP answer."""
    if is_transient_status(status):
        return "transient"
    return "ok" if status < 400 else "definite_4xx"


def backoff(settings: DependencySettings) -> wait_random_exponential:
    """Full jitter: a random wait in [0, min(initial * 2**n, max)] before try n + 1."""
    return wait_random_exponential(
        multiplier=settings.backoff_initial_s, max=settings.backoff_max_s
    )


def body_of(response: httpx.Response) -> dict[str, Any]:
    try:
        parsed = response.json()
    except ValueError:
        return {"text": response.text[:500]}
    return parsed if isinstance(parsed, dict) else {"body": parsed}


class Dependency:
    """One external system: an httpx client (made in ``start``, or by the first call) and
    a breaker. Safe to share between concurrent handlers."""

    def __init__(
        self, settings: DependencySettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        """``transport``: httpx's own (default), or e.g. ``httpx.MockTransport`` in unit tests."""
        if not settings.base_url:
            raise ValueError(f"{settings.name}: no base URL")
        if settings.attempts < 1 or settings.failure_threshold < 1:
            raise ValueError(f"{settings.name}: attempts and failure_threshold must be >= 1")
        self.settings = settings
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._breakers = AsyncCircuitBreakerFactory(
            default_threshold=settings.failure_threshold, default_ttl=settings.recovery_s
        )
        self._breakers.add_listener(self._on_breaker_event)
        self._breaker: Context | None = None  # the breaker's state, read for ``state``
        self._seconds = DEPENDENCY_CALL_SECONDS.labels(settings.name)
        DEPENDENCY_BREAKER_STATE.labels(settings.name).set(0)

    @property
    def name(self) -> str:
        return self.settings.name

    async def start(self) -> None:
        if self._client is not None:
            return
        self._breaker = (await self._breakers.get_breaker(self.name)).context
        client = httpx.AsyncClient(
            base_url=self.settings.base_url,
            timeout=httpx.Timeout(self.settings.timeout_s),
            transport=self._transport,
        )
        instrument_http_client(client)  # client spans carrying traceparent, if tracing
        self._client = client

    @property
    def started(self) -> bool:
        """Whether the HTTP client exists: from ``start`` until ``close``."""
        return self._client is not None

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    @property
    def state(self) -> str:
        """ "closed" | "open" | "half-open" (an open breaker half-opens at the next call
        after ``recovery_s``)."""
        if self._breaker is None:
            return "closed"
        return _STATES.get(self._breaker.state, "closed")

    async def post(self, path: str, json: Mapping[str, Any], idempotency_key: str) -> Answer:
        """POST with ``Idempotency-Key``; retried with the same key while transient."""
        return await self._call("POST", path, dict(json), {"Idempotency-Key": idempotency_key})

    async def get(self, path: str) -> Answer:
        return await self._call("GET", path, None, {})

    async def _call(
        self, method: str, path: str, json: dict[str, Any] | None, headers: dict[str, str]
    ) -> Answer:
        await self.start()
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.attempts),
            wait=backoff(self.settings),
            retry=retry_if_exception_type(_Transient),
            reraise=True,
        )
        try:
            answer: Answer = await retrying(self._attempt, method, path, json, headers)
        except _Transient as exc:
            raise DependencyUnavailable(self.name, self._retry_after(), str(exc)) from None
        return answer

    async def _attempt(
        self, method: str, path: str, json: dict[str, Any] | None, headers: dict[str, str]
    ) -> Answer:
        client = self._client
        if client is None:
            raise RuntimeError(f"{self.name}: client closed")
        try:
            async with await self._breakers.get_breaker(self.name):
                started = time.perf_counter()
                try:
                    response = await client.request(method, path, json=json, headers=headers)
                except httpx.TimeoutException as exc:
                    DEPENDENCY_CALLS.labels(self.name, "timeout").inc()
                    raise _Transient(f"{method} {path}: timed out ({type(exc).__name__})") from exc
                except httpx.RequestError as exc:
                    DEPENDENCY_CALLS.labels(self.name, "transient").inc()
                    raise _Transient(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
                finally:
                    self._seconds.observe(time.perf_counter() - started)
                outcome = outcome_of(response.status_code)
                DEPENDENCY_CALLS.labels(self.name, outcome).inc()
                if outcome == "transient":
                    raise _Transient(f"{method} {path}: HTTP {response.status_code}")
                return Answer(response.status_code, body_of(response))
        except OpenedState:
            DEPENDENCY_CALLS.labels(self.name, "rejected_open").inc()
            raise DependencyUnavailable(self.name, self._retry_after(), "breaker open") from None

    def _retry_after(self) -> float:
        """Until the breaker half-opens when it is open; else one bounded backoff."""
        breaker = self._breaker
        if breaker is not None and breaker.state == "opened":
            opened_at = breaker.opened_at or time.time()
            remaining = opened_at + self.settings.recovery_s - time.time()
            return max(remaining + 0.01, _MIN_RETRY_AFTER_S)
        return max(self.settings.backoff_max_s, _MIN_RETRY_AFTER_S)

    def _on_breaker_event(self, name: str, kind: str, event: Any) -> None:
        if kind != "state_changed" or not isinstance(event, ContextChanged):
            return
        state = _STATES.get(event.state, "closed")
        DEPENDENCY_BREAKER_STATE.labels(name).set(STATE_VALUES[state])
        DEPENDENCY_BREAKER_TRANSITIONS.labels(name, state).inc()
        level = logging.INFO if state != "open" else logging.WARNING
        log.log(level, "dependency %s: breaker %s", name, state)
