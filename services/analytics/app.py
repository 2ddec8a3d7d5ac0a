"""The analytics service's entrypoint: settings, wiring, `python -m services.analytics`.

Unlike the saga services it has no database and no outbox: faust keeps its tables in
memory, backed by changelog topics it creates, and a faust worker runs the whole process
(agent, table recovery, web server, SIGTERM).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import faust
from pydantic import Field

from events.logs import configure_logging, json_logs_wanted
from events.settings import PlatformSettings, load_settings
from services.analytics.api import register
from services.analytics.pipeline import AnalyticsConfig, build

log = logging.getLogger(__name__)


class Settings(PlatformSettings):
    http_host: str = Field(default="127.0.0.1", description="Address the HTTP API binds")
    http_port: int = Field(default=8107, ge=1, le=65535, description="HTTP port")
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: JSON unless stderr is a terminal"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO")
    analytics_data_dir: Path | None = Field(
        default=None, description="Faust's state directory; default <VAR_DIR>/analytics"
    )
    changelog_replication_factor: int = Field(
        default=1, ge=1, description="Replication of the changelog topics faust creates"
    )

    def analytics_config(self) -> AnalyticsConfig:
        return AnalyticsConfig(
            bootstrap=self.kafka_bootstrap_servers,
            topic_prefix=self.topic_prefix,
            schemas_dir=self.schemas_dir,
            data_dir=self.analytics_data_dir or self.var_dir / "analytics",
            http_host=self.http_host,
            http_port=self.http_port,
            replication_factor=self.changelog_replication_factor,
        )


def main() -> None:
    settings = load_settings("analytics", Settings)
    configure_logging(
        "analytics", json=json_logs_wanted(settings.log_format), level=settings.log_level
    )
    if settings.log_level != "DEBUG":
        # faust logs every step of every rebalance at INFO; keep its warnings and errors.
        for name in ("faust", "mode"):
            logging.getLogger(name).setLevel(logging.WARNING)
    analytics = build(settings.analytics_config())
    register(analytics)
    log.info(
        "analytics: counting %s as %s, http on %s:%s",
        ", ".join(analytics.topics),
        analytics.app.conf.id,
        settings.http_host,
        settings.http_port,
    )
    # Our logging stays (override_logging=False); faust's banner and spinner do not.
    worker = faust.Worker(analytics.app, quiet=True, override_logging=False, redirect_stdouts=False)
    worker.spinner = None  # it writes terminal escapes to stdout, which is our log file
    worker.execute_from_commandline()
