"""The stand-ins' Prometheus metrics, served at their ``/metrics``."""

from __future__ import annotations

from prometheus_client import Counter

REQUESTS = Counter(
    "choreo_standin_requests_total",
    "Requests to a stand-in's /v1 API by outcome: done (2xx), replayed (a repeated "
    "idempotency key), refused (4xx), fault (an injected 503), error (5xx)",
    ["standin", "method", "route", "outcome"],
)


def outcome(status: int, replayed: bool) -> str:
    if replayed:
        return "replayed"
    if status < 400:
        return "done"
    return "refused" if status < 500 else "error"
