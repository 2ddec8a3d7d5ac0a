"""What ``choreo up`` and ``choreo demo`` both do first: the broker (the one the settings
name, ``KAFKA_BOOTSTRAP_SERVERS`` in the environment or ``.env``, else the local broker,
started when it is not running), the catalogue's topics on it, then the services."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from events.auth import OPERATOR_READ, mint
from events.catalogue import Catalogue
from events.cli.catalogue_view import load_catalogue
from events.cli.errors import CliError
from events.cli.topics import apply_or_fail
from events.kafka import KafkaConnection
from events.settings import PlatformSettings
from events.supervisor import ProcessSpec, SupervisorError, start, wait_ready


def ensure_broker(settings: PlatformSettings) -> KafkaConnection:
    """How to reach the broker to use, the local broker started if it is the one; CliError
    when it will not start."""
    if "kafka_bootstrap_servers" in settings.model_fields_set:
        return settings.kafka_connection()  # someone else's broker: not ours to start
    # Imported when needed: the broker module resolves jars and java.
    from infra.broker import BrokerError, default_spec, up

    print("starting the local Kafka broker ...", flush=True)
    try:
        st = up(default_spec())
    except BrokerError as exc:
        raise CliError(str(exc)) from None
    print(f"broker running at {st.bootstrap} (log {st.log_file})")
    return KafkaConnection(st.bootstrap)


def broker_and_topics(settings: PlatformSettings) -> tuple[KafkaConnection, Catalogue]:
    """The broker's connection and the catalogue, its topics there; CliError when they are
    not."""
    kafka = ensure_broker(settings)
    catalogue = load_catalogue(settings)
    report = apply_or_fail(kafka, list(catalogue.topics.values()))
    print(f"topics: {len(report.created)} created, {len(report.unchanged)} already there")
    return kafka, catalogue


def start_services(
    specs: Sequence[ProcessSpec],
    settings: PlatformSettings,
    kafka: KafkaConnection,
    deadline_s: float,
    env: Mapping[str, str] | None = None,
) -> None:
    """Every service started and ready within ``deadline_s``, ``env`` added to their
    environment; CliError naming one that is not."""
    logs = settings.var_dir / "logs"
    print(f"starting {len(specs)} services (logs in {logs}) ...", flush=True)
    try:
        start(specs, var_dir=settings.var_dir, bootstrap=kafka.bootstrap, env=env)
        wait_ready(specs, var_dir=settings.var_dir, deadline_s=deadline_s)
    except SupervisorError as exc:
        raise CliError(str(exc)) from None


DASHBOARD_TOKEN_TTL_S = 12 * 3600  # a working day's session


def dashboard_url(port: int, secret: str) -> str:
    """The dashboard with an operator token in the URL's fragment, which the browser keeps
    to itself: the page reads it, and no server (nor its logs) ever sees it in a URL."""
    token = mint(secret, "operator", (OPERATOR_READ,), ttl_s=DASHBOARD_TOKEN_TTL_S)
    return f"http://127.0.0.1:{port}/dashboard#token={token}"
