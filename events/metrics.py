"""Prometheus metrics of the runtime, served at ``/metrics`` by every service."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_CONSUMED = Counter(
    "choreo_events_consumed_total", "Events applied by a consumer", ["consumer", "event_type"]
)
EVENTS_PRODUCED = Counter(
    "choreo_events_produced_total",
    "Events published by the outbox relay (acknowledged by the broker)",
    ["event_type"],
)
HANDLER_SECONDS = Histogram(
    "choreo_handler_seconds",
    "Time spent in a handler",
    ["consumer", "event_type"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
DUPLICATES = Counter("choreo_duplicates_skipped_total", "Redelivered events skipped", ["consumer"])
RETRIES = Counter("choreo_handler_retries_total", "Handler retries", ["consumer"])
DEAD_LETTERS = Counter(
    "choreo_dead_letters_total", "Events sent to a dead-letter topic", ["consumer", "error_type"]
)
OUTBOX_BACKLOG = Gauge("choreo_outbox_backlog", "Outbox rows not yet published")
OUTBOX_OLDEST_AGE = Gauge(
    "choreo_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row"
)
CONSUMER_LAG = Gauge(
    "choreo_consumer_lag",
    "Messages behind the end of a partition",
    ["consumer", "topic", "partition"],
)
OUTBOX_QUARANTINED_TOTAL = Counter(
    "choreo_outbox_quarantined_total",
    "Outbox rows the relay moved aside because Kafka refused them for good",
    ["event_type", "error_type"],
)
OUTBOX_QUARANTINED = Gauge(
    "choreo_outbox_quarantine_rows",
    "Outbox rows waiting in quarantine (counted in the database: survives restarts)",
)
# Sequenced dead letters, counted in the consumer's database (so they survive restarts).
BLOCKED_KEYS = Gauge(
    "choreo_blocked_keys", "Keys whose events wait behind a dead letter", ["consumer"]
)
PARKED_EVENTS = Gauge(
    "choreo_parked_events", "Events parked behind a blocked key's dead letter", ["consumer"]
)
# Counted in the projection's database (``events.projection.projection_skipped``): a gauge set
# from there, so the figure survives restarts and belongs to the generation serving reads.
PROJECTION_DEAD_LETTERED = Gauge(
    "choreo_projection_dead_lettered",
    "Events the serving generation of a projection left out because applying them failed "
    "(sent to the dead-letter topic)",
    ["projection"],
)
PROJECTION_UNDECODABLE = Gauge(
    "choreo_projection_undecodable",
    "Messages the serving generation of a projection skipped because no contract reads them",
    ["projection"],
)
# External systems a handler calls (events.dependency), labelled by the dependency's name.
DEPENDENCY_BREAKER_STATE = Gauge(
    "choreo_dependency_breaker_state",
    "Circuit breaker of an external dependency: 0 closed, 1 half-open, 2 open",
    ["dependency"],
)
DEPENDENCY_BREAKER_TRANSITIONS = Counter(
    "choreo_dependency_breaker_transitions_total",
    "Circuit breaker state changes of an external dependency, by the state entered",
    ["dependency", "to"],
)
DEPENDENCY_CALLS = Counter(
    "choreo_dependency_calls_total",
    "Tries of calls to an external dependency by outcome (ok, definite_4xx, transient, "
    "timeout, rejected_open)",
    ["dependency", "outcome"],
)
DEPENDENCY_CALL_SECONDS = Histogram(
    "choreo_dependency_call_seconds",
    "Time of one try of a call to an external dependency",
    ["dependency"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
CONSUMER_PAUSED_PARTITIONS = Gauge(
    "choreo_consumer_paused_partitions",
    "Partitions a consumer paused because a dependency its handler calls is unavailable",
    ["consumer"],
)
