"""What ``choreo up`` and ``choreo demo`` both do first: the broker (the one the settings
name, ``KAFKA_BOOTSTRAP_SERVERS`` in the environment or ``.env``, else the local broker,
started when it is not running), the catalogue's topics and ACLs on it, then the services.

With ``--secure`` the local broker is the secured one (SASL_SSL, SCRAM-SHA-512, ACLs): the
command itself connects as ``admin`` and each service as its own principal.

The payment provider and the carrier stand-ins start with the services, and payments and
shipping are told where they listen (``dependency_urls``)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence

from events.acls import parties
from events.catalogue import Catalogue
from events.cli.catalogue_view import load_catalogue
from events.cli.errors import USAGE, CliError
from events.cli.topics import apply_acls_or_fail, apply_or_fail
from events.kafka import KafkaConnection
from events.settings import PlatformSettings
from events.supervisor import ProcessSpec, SupervisorError, load_manifest, start, wait_ready

# A service's own Kafka settings (KAFKA_SASL_USERNAME, ...) by its name; none: the settings
# the command was started with, inherited.
ServiceKafkaEnv = Callable[[str], Mapping[str, str]]


def _inherited(name: str) -> Mapping[str, str]:
    return {}


def ensure_broker(
    settings: PlatformSettings, secure: bool = False, principals: Sequence[str] = ()
) -> tuple[KafkaConnection, ServiceKafkaEnv]:
    """How this command reaches the broker to use and how each service does, the local
    broker started if it is the one (the secured one with ``secure``, a principal per name in
    ``principals``); CliError when it will not start."""
    if "kafka_bootstrap_servers" in settings.model_fields_set:
        if secure:
            raise CliError(
                "--secure starts the local secured broker, but KAFKA_BOOTSTRAP_SERVERS names "
                "another: leave --secure out and give that broker's KAFKA_SECURITY_PROTOCOL, "
                "KAFKA_SASL_* and KAFKA_SSL_* settings instead",
                USAGE,
            )
        return settings.kafka_connection(), _inherited  # someone else's broker: not ours
    # Imported when needed: the broker module resolves jars and java.
    from infra.broker import ADMIN, BrokerError, default_spec, up

    what = "secured local Kafka broker" if secure else "local Kafka broker"
    print(f"starting the {what} ...", flush=True)
    try:
        spec = default_spec(secure=secure, principals=principals)
        st = up(spec)
        kafka = spec.connection(ADMIN)
    except BrokerError as exc:
        raise CliError(str(exc)) from None
    print(f"broker running at {st.bootstrap} (log {st.log_file})")
    if not secure:
        return kafka, _inherited
    print(f"  SASL_SSL + SCRAM-SHA-512, CA {spec.ca_file}, passwords in {spec.credentials_file}")
    return kafka, spec.environment


def broker_and_topics(
    settings: PlatformSettings, secure: bool = False
) -> tuple[KafkaConnection, Catalogue, ServiceKafkaEnv]:
    """The broker's connection, the catalogue (its topics and ACLs there) and each service's
    Kafka settings; CliError when they are not."""
    catalogue = load_catalogue(settings)
    specs = list(catalogue.topics.values())
    # Every party the catalogue names and every service the manifest starts gets a principal.
    names = sorted({*parties(specs), *(s.name for s in load_manifest())})
    kafka, service_env = ensure_broker(settings, secure, names)
    report = apply_or_fail(kafka, specs)
    print(f"topics: {len(report.created)} created, {len(report.unchanged)} already there")
    acls = apply_acls_or_fail(kafka, specs, settings.topic_prefix)
    if acls.authorizer:
        print(f"ACLs: {len(acls.created)} created, {len(acls.unchanged)} already there")
    return kafka, catalogue, service_env


# The stand-in processes of the manifest and the setting that tells a service where each is.
DEPENDENCY_URL_SETTINGS = {"provider": "PAYMENT_PROVIDER_URL", "carrier": "CARRIER_URL"}


def dependency_urls(
    specs: Sequence[ProcessSpec], environ: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """``PAYMENT_PROVIDER_URL`` and ``CARRIER_URL`` for the stand-ins among ``specs`` (on
    their ports); one the environment sets already (a real provider) is left to it."""
    urls = {}
    for spec in specs:
        setting = DEPENDENCY_URL_SETTINGS.get(spec.name)
        if setting is not None and setting not in environ:
            urls[setting] = f"http://127.0.0.1:{spec.port}"
    return urls


def start_services(
    specs: Sequence[ProcessSpec],
    settings: PlatformSettings,
    kafka: KafkaConnection,
    deadline_s: float,
    env: Mapping[str, str] | None = None,
    service_env: ServiceKafkaEnv = _inherited,
) -> None:
    """Every service started and ready within ``deadline_s``, ``env`` and its own
    ``service_env(name)`` added to its environment, and the stand-ins' URLs
    (``dependency_urls``); CliError naming one that is not."""
    logs = settings.var_dir / "logs"
    print(f"starting {len(specs)} services (logs in {logs}) ...", flush=True)
    # Further instances start once the first of each service is ready: the first creates
    # the service's tables, and instances creating them at once on a fresh PostgreSQL
    # database collide (CREATE TABLE races on pg_class's unique index).
    firsts = [s for s in specs if not s.service]
    waves = [firsts, [s for s in specs if s.service]]
    end = time.monotonic() + deadline_s
    urls = dependency_urls(specs)
    try:
        for wave in (w for w in waves if w):
            for spec in wave:
                own = {**urls, **(env or {}), **service_env(spec.service_name)}
                start([spec], var_dir=settings.var_dir, bootstrap=kafka.bootstrap, env=own)
            left = max(1.0, end - time.monotonic())
            wait_ready(wave, var_dir=settings.var_dir, deadline_s=left)
    except SupervisorError as exc:
        raise CliError(str(exc)) from None


DASHBOARD_TOKEN_TTL_S = 12 * 3600  # a working day's session


def dashboard_url(port: int, secret: str) -> str:
    """The dashboard with an operator token in the URL's fragment, which the browser keeps
    to itself: the page reads it, and no server (nor its logs) ever sees it in a URL."""
    from events.auth import OPERATOR_READ, mint  # PyJWT: only when services are started

    token = mint(secret, "operator", (OPERATOR_READ,), ttl_s=DASHBOARD_TOKEN_TTL_S)
    return f"http://127.0.0.1:{port}/dashboard#token={token}"
