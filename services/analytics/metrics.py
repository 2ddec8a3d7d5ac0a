"""Analytics' own Prometheus metrics (beside the platform's, served at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter

# Analytics only observes the saga: a message it cannot read is the saga consumers' to
# dead-letter (they own the .dlq topics), so here it is logged and counted, then skipped.
MALFORMED = Counter(
    "choreo_analytics_malformed_total",
    "Messages analytics skipped because it could not read them",
    ["topic", "error_type"],
)
