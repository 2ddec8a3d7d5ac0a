"""The analytics service's entrypoint: settings, wiring, `python -m services.analytics`.

It has the platform's process shell (``events.process``): settings read once here, the
same JSON logs and tracer provider as every service (a handling span per counted event, in
its saga's trace), ``/health``, ``/ready`` and ``/metrics`` of the same shape (``api``), and
SIGTERM bounded by ``SHUTDOWN_TIMEOUT_S``.

What faust keeps, and why it is not an ``events.service.Service``: a faust worker owns the
whole process. It runs the event loop, its signal handlers and its own web server (aiohttp,
where the routes are registered as faust pages), and its agent's consumer, offsets and
table recovery are tied to its app. Running it as one component of the platform's serve
loop would mean driving faust's internal start-up and shutdown sequence by hand. There is
no database and no outbox: faust keeps its tables in memory, backed by changelog topics it
creates.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import faust
from pydantic import Field

from events.auth import Authenticator, AuthSettings, warn_if_open
from events.kafka_auth import EXIT_REFUSED, explain
from events.process import ProcessSettings, observed
from events.settings import load_settings
from services.analytics.api import register
from services.analytics.pipeline import AnalyticsConfig, build

log = logging.getLogger(__name__)

NAME = "analytics"


class Settings(ProcessSettings, AuthSettings):
    http_host: str = Field(default="127.0.0.1", description="Address the HTTP API binds")
    http_port: int = Field(default=8107, ge=1, le=65535, description="HTTP port")
    analytics_data_dir: Path | None = Field(
        default=None, description="Faust's state directory; default <VAR_DIR>/analytics"
    )
    changelog_replication_factor: int = Field(
        default=1, ge=1, description="Replication of the changelog topics faust creates"
    )

    def analytics_config(self) -> AnalyticsConfig:
        return AnalyticsConfig(
            kafka=self.kafka_connection(),
            topic_prefix=self.topic_prefix,
            schemas_dir=self.schemas_dir,
            data_dir=self.analytics_data_dir or self.var_dir / "analytics",
            http_host=self.http_host,
            http_port=self.http_port,
            replication_factor=self.changelog_replication_factor,
            schema_encoding=self.schema_encoding(),
        )


class Worker(faust.Worker):
    """faust's worker, its stop bounded as the platform's services' are."""

    def __init__(self, app: faust.App, *, shutdown_timeout_s: float) -> None:
        # Our logging stays (override_logging=False); faust's banner and spinner do not.
        super().__init__(app, quiet=True, override_logging=False, redirect_stdouts=False)
        self.spinner = None  # it writes terminal escapes to stdout, which is our log file
        self.shutdown_timeout_s = shutdown_timeout_s

    async def stop(self) -> None:
        try:
            async with asyncio.timeout(self.shutdown_timeout_s):
                await super().stop()
        except TimeoutError:
            # faust then cancels what is left and closes its loop.
            log.error("%s: shutdown took longer than %.0fs", NAME, self.shutdown_timeout_s)


def main() -> None:
    settings = load_settings(NAME, Settings)
    with observed(NAME, settings):
        if settings.log_level != "DEBUG":
            # faust logs every step of every rebalance at INFO; keep its warnings and errors.
            for name in ("faust", "mode"):
                logging.getLogger(name).setLevel(logging.WARNING)
        analytics = build(settings.analytics_config())
        register(analytics, Authenticator.from_settings(settings))
        warn_if_open(NAME, settings)
        log.info(
            "analytics: counting %s as %s, http on %s:%s",
            ", ".join(analytics.topics),
            analytics.app.conf.id,
            settings.http_host,
            settings.http_port,
        )
        worker = Worker(analytics.app, shutdown_timeout_s=settings.shutdown_timeout_s)
        try:
            worker.execute_from_commandline()
        except SystemExit as done:
            log.info("%s stopped", NAME)
            # mode's worker exits 1 from inside its handler of the failure: the failure
            # is the exit's context (or the crash it recorded).
            refused = _refused(settings, worker.crash_reason or done.__context__)
            if refused is not None:
                # After faust's own report, last: `choreo up` shows the last line of a log.
                print(f"{NAME}: {refused}", file=sys.stderr, flush=True)
                raise SystemExit(EXIT_REFUSED) from None
            raise SystemExit(done.code) from None


def _refused(settings: Settings, crash: BaseException | None) -> str | None:
    """Kafka's refusal of the principal (a wrong password, no ACL) that crashed faust, in
    one line; None for any other crash."""
    return None if crash is None else explain(settings.kafka_connection(), crash)
