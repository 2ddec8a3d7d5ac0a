"""What ``choreo up`` and ``choreo demo`` both do first: the broker (the one the settings
name, ``KAFKA_BOOTSTRAP_SERVERS`` in the environment or ``.env``, else the local broker,
started when it is not running), the catalogue's topics on it, then the services."""

from __future__ import annotations

from collections.abc import Sequence

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
) -> None:
    """Every service started and ready within ``deadline_s``; CliError naming one that is not."""
    logs = settings.var_dir / "logs"
    print(f"starting {len(specs)} services (logs in {logs}) ...", flush=True)
    try:
        start(specs, var_dir=settings.var_dir, bootstrap=kafka.bootstrap)
        wait_ready(specs, var_dir=settings.var_dir, deadline_s=deadline_s)
    except SupervisorError as exc:
        raise CliError(str(exc)) from None
