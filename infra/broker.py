"""The local Apache Kafka broker: a single KRaft node started from Maven jars.

No Docker engine exists on the machines this project runs on, so the broker is a plain JVM
process started from the jars that ``infra/kafka/pom.xml`` resolves. Everything a broker owns
lives under its *home* directory (config, data, logs, pid file), so several brokers can run side
by side on different ports, and data survives ``down()``/``up()``.

    spec = default_spec()   # <repo>/var/kafka on 127.0.0.1:9092
    up(spec)                # formats storage once, starts, waits for a metadata answer
    down(spec)              # SIGTERM, then SIGKILL after the deadline

A *secured* broker (``default_spec(secure=True)``: ``<repo>/var/kafka-secure`` on
127.0.0.1:9094) serves SASL_SSL with SCRAM-SHA-512 only, with KRaft's StandardAuthorizer and no
access where no ACL grants it. Its home also holds a private CA and the broker's certificate
(:mod:`infra.tls`) and one password per principal (:mod:`infra.credentials`); every principal's
SCRAM credential is written into the metadata log when storage is formatted, and
``spec.connection(name)`` / ``spec.environment(name)`` say how that principal connects.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import hashlib
import os
import string
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from aiokafka.admin import AIOKafkaAdminClient
from pydantic import SecretStr

from events.kafka import KafkaConnection, SaslMechanism
from infra.credentials import ADMIN, BROKER, OPERATOR, ensure_passwords
from infra.locks import exclusive
from infra.processes import (
    HOST,
    LocalHome,
    file_size,
    free_port,
    free_ports,
    last_error,
    maven_fetch,
    owned_pid,
    port_open,
    read_from,
    repo_root,
    run_async,
    start,
    stop,
    wait_for_start,
    which,
)
from infra.tls import TlsFiles, ensure_broker_tls, write_private

__all__ = [
    "ADMIN",
    "OPERATOR",
    "BrokerError",
    "BrokerSpec",
    "BrokerStatus",
    "LogMarks",
    "NodeStart",
    "broker_pid",
    "default_spec",
    "down",
    "ensure_jars",
    "free_port",
    "free_ports",
    "private_spec",
    "repo_root",
    "start_node",
    "status",
    "up",
    "write_config",
]

_HOST = HOST
_KAFKA_MAIN = "kafka.Kafka"
_STORAGE_TOOL = "kafka.tools.StorageTool"
_SECURE_PORT = 9094
_SCRAM: SaslMechanism = "SCRAM-SHA-512"
_SCRAM_ITERATIONS = 8192


class BrokerError(Exception):
    """The local broker cannot be provisioned, started or stopped; the message says why."""


@dataclass(frozen=True)
class BrokerSpec(LocalHome):
    """Where a broker lives and which loopback ports it listens on; ``secure`` brokers serve
    SASL_SSL to ``principals`` (one per service) and the built-in admin and operator."""

    pid_name: ClassVar[str] = "broker.pid"
    log_name: ClassVar[str] = "server.log"

    port: int = 9092
    controller_port: int = 9093
    heap_mb: int = 512
    secure: bool = False
    principals: tuple[str, ...] = ()
    # A node of a cluster (infra.cluster): its KRaft node id and every voter's controller
    # port, in node id order; empty for the single standalone node.
    node_id: int = 1
    voters: tuple[int, ...] = ()

    @property
    def bootstrap(self) -> str:
        return f"{_HOST}:{self.port}"

    @property
    def replicas(self) -> int:
        """How many brokers hold each internal topic's partitions: every node of the cluster."""
        return max(len(self.voters), 1)

    @property
    def console_file(self) -> Path:
        """The JVM's own stdout/stderr (start-up crashes land here, not in ``log_file``)."""
        return self.home / "logs" / "console.log"

    @property
    def config_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def tls_dir(self) -> Path:
        return self.home / "tls"

    @property
    def ca_file(self) -> Path:
        """The CA a client of the secured broker trusts (``KAFKA_SSL_CAFILE``)."""
        return self.tls_dir / "ca.pem"

    @property
    def credentials_file(self) -> Path:
        return self.home / "credentials.json"

    def passwords(self) -> dict[str, SecretStr]:
        """Every principal's password (generated on first use, then reused)."""
        return ensure_passwords(self.credentials_file, self.principals)

    def connection(self, principal: str = ADMIN) -> KafkaConnection:
        """How ``principal`` reaches this broker (a plaintext broker ignores the name)."""
        if not self.secure:
            return KafkaConnection(bootstrap=self.bootstrap)
        passwords = self.passwords()
        if principal not in passwords:
            raise BrokerError(f"the secured broker has no principal {principal!r}")
        return KafkaConnection(
            bootstrap=self.bootstrap,
            security_protocol="SASL_SSL",
            sasl_mechanism=_SCRAM,
            username=principal,
            password=passwords[principal],
            ca_file=self.ca_file,
        )

    def environment(self, principal: str = ADMIN) -> dict[str, str]:
        """The same connection as the environment a choreo process reads its settings from.
        It holds the password: pass it to a child process, never print it."""
        conn = self.connection(principal)
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": conn.bootstrap,
            "KAFKA_SECURITY_PROTOCOL": conn.security_protocol,
        }
        if self.secure:
            assert conn.password is not None and conn.username is not None
            env.update(
                KAFKA_SASL_MECHANISM=_SCRAM,
                KAFKA_SASL_USERNAME=conn.username,
                KAFKA_SASL_PASSWORD=conn.password.get_secret_value(),
                KAFKA_SSL_CAFILE=str(self.ca_file),
            )
        return env


@dataclass
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap: str
    log_file: Path


def _kafka_dir() -> Path:
    return Path(__file__).resolve().parent / "kafka"


def default_spec(secure: bool = False, principals: Iterable[str] = ()) -> BrokerSpec:
    """``<repo>/var/kafka`` on ports 9092/9093, unless ``CHOREO_KAFKA_HOME``/``_PORT`` say;
    secured: ``<repo>/var/kafka-secure`` on 9094/9095 (``CHOREO_KAFKA_SECURE_HOME``/``_PORT``),
    with a principal per name in ``principals`` besides admin and operator."""
    variable = "CHOREO_KAFKA_SECURE" if secure else "CHOREO_KAFKA"
    default_home = repo_root() / "var" / ("kafka-secure" if secure else "kafka")
    home = Path(os.environ.get(f"{variable}_HOME") or default_home).resolve()
    port_text = os.environ.get(f"{variable}_PORT")
    port = _SECURE_PORT if secure else 9092
    if port_text:
        try:
            port = int(port_text)
        except ValueError:
            raise BrokerError(f"{variable}_PORT must be a port number, got {port_text!r}") from None
    return BrokerSpec(
        home=home,
        port=port,
        controller_port=port + 1,
        secure=secure,
        principals=tuple(principals) if secure else (),
    )


# --------------------------------------------------------------------------- jars


def ensure_jars(cache: Path | None = None) -> Path:
    """The directory holding the broker's classpath; resolves it with Maven when missing."""
    libs = (cache or repo_root() / ".cache" / "kafka") / "libs"
    goal = [
        "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={libs}",
    ]  # fmt: skip
    maven_fetch(
        _kafka_dir() / "pom.xml",
        libs,
        goal,
        BrokerError,
        "resolving the Kafka jars",
        complete=lambda: any(libs.glob("kafka_2.13-*.jar")),
    )
    return libs


# --------------------------------------------------------------------------- lifecycle


def status(spec: BrokerSpec) -> BrokerStatus:
    """Running means: the pid file names a live broker process of this home AND the port accepts
    connections."""
    pid = broker_pid(spec)
    running = pid is not None and port_open(spec.port)
    return BrokerStatus(running=running, pid=pid, bootstrap=spec.bootstrap, log_file=spec.log_file)


def up(spec: BrokerSpec, timeout: float = 120.0) -> BrokerStatus:
    """Start the broker unless it runs already; return once it answers a metadata request."""
    deadline = time.monotonic() + timeout
    java = which("java", BrokerError)
    spec.home.mkdir(parents=True, exist_ok=True)
    with exclusive(spec.home / ".lock"):
        current = status(spec)
        if current.pid is not None:  # running, or started by someone else and starting up
            if not current.running:
                NodeStart(spec, current.pid).wait_until_ready(deadline)
            if spec.secure:  # a principal named since it started (a new service)
                _add_missing_principals(spec, max(deadline - time.monotonic(), 5.0))
            return status(spec)
        if port_open(spec.port) or port_open(spec.controller_port):
            raise BrokerError(
                f"port {spec.port} or {spec.controller_port} on {_HOST} is already in use by "
                f"another process: stop it or choose other ports (CHOREO_KAFKA_PORT)"
            )
        start_node(spec, java, ensure_jars()).wait_until_ready(deadline)
        if spec.secure:
            _add_missing_principals(spec, max(deadline - time.monotonic(), 5.0))
        return status(spec)


def down(spec: BrokerSpec, timeout: float = 60.0) -> bool:
    """Stop the broker (SIGTERM, SIGKILL after ``timeout``); return whether one was running."""
    return stop(spec, broker_pid(spec), timeout, BrokerError)


def start_node(
    spec: BrokerSpec,
    java: str,
    libs: Path,
    cluster_id: str | None = None,
    quorum_args: tuple[str, ...] = ("--standalone",),
) -> NodeStart:
    """Configures ``spec``'s node, formats its storage the first time (a cluster's nodes
    share ``cluster_id`` and name their voters in ``quorum_args``) and starts it; the caller
    holds the home's lock and waits on what this returns."""
    write_config(spec)
    if not (spec.data_dir / "meta.properties").exists():
        _format_storage(spec, java, libs, cluster_id, quorum_args)
    logs_seen = LogMarks.take(spec)
    command = [
        java, *_jvm_options(spec, spec.heap_mb), "-cp", _classpath(libs),
        _KAFKA_MAIN, str(spec.config_file),
    ]  # fmt: skip
    process = start(command, spec.console_file, spec.home)
    spec.pid_file.write_text(f"{process.pid}\n")
    return NodeStart(spec, process.pid, process, logs_seen)


# --------------------------------------------------------------------------- internals


def _classpath(libs: Path) -> str:
    return str(libs / "*")


def _jvm_options(spec: BrokerSpec, heap_mb: int) -> list[str]:
    return [
        f"-Xms{heap_mb}m",
        f"-Xmx{heap_mb}m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        # C1 only: the optimising compiler's threads cost a 2-core machine more CPU than its
        # code saves a local broker (measured: startup 3.3 -> 2.6 s, broker CPU per saga at
        # 100 orders/s down a third, publish throughput unchanged).
        "-XX:TieredStopAtLevel=1",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={_kafka_dir() / 'log4j2.properties'}",
        f"-Dchoreo.kafka.log.file={spec.log_file}",
    ]


def write_config(spec: BrokerSpec) -> None:
    """Renders the node's ``server.properties`` (and a secured one's TLS files)."""
    quorum = spec.voters or (spec.controller_port,)
    values: dict[str, object] = {
        "NODE_ID": spec.node_id,
        "QUORUM": ",".join(f"{_HOST}:{port}" for port in quorum),
        "REPLICAS": spec.replicas,
        "MIN_ISR": min(spec.replicas, 2),
        "PORT": spec.port,
        "CONTROLLER_PORT": spec.controller_port,
        "DATA_DIR": spec.data_dir,
        "CLIENT": "SASL_SSL" if spec.secure else "PLAINTEXT",
        "CONTROLLER": "SASL_PLAINTEXT" if spec.secure else "PLAINTEXT",
    }
    parts = [(_kafka_dir() / "server.properties").read_text()]
    if spec.secure:
        tls: TlsFiles = ensure_broker_tls(spec.tls_dir)
        passwords = spec.passwords()
        values.update(
            TLS_KEYSTORE=tls.keystore,
            TLS_CA=tls.ca_cert,
            BROKER_PASSWORD=passwords[BROKER].get_secret_value(),
            SUPER_USERS=f"User:{ADMIN};User:{BROKER}",
        )
        parts.append((_kafka_dir() / "secure.properties").read_text())
    rendered = string.Template("\n".join(parts)).substitute(values)
    spec.data_dir.mkdir(parents=True, exist_ok=True)
    spec.log_file.parent.mkdir(parents=True, exist_ok=True)
    # 0600 always: a secured broker's config holds its password.
    write_private(spec.config_file, rendered.encode())


def _format_storage(
    spec: BrokerSpec,
    java: str,
    libs: Path,
    cluster_id: str | None = None,
    quorum_args: tuple[str, ...] = ("--standalone",),
) -> None:
    """Format once: ``--standalone`` makes the single node its own quorum; a cluster's nodes
    share one ``cluster_id`` and name every voter with ``--initial-controllers``."""
    base = [java, *_jvm_options(spec, 128), "-cp", _classpath(libs), _STORAGE_TOOL]
    if cluster_id is None:
        cluster_id = _run_tool(spec, [*base, "random-uuid"]).strip().splitlines()[-1]
    scram: list[str] = []
    if spec.secure:
        for name, password in spec.passwords().items():
            scram += ["--add-scram", _scram_argument(name, password)]
    _run_tool(
        spec,
        [*base, "format", "-t", cluster_id, "-c", str(spec.config_file), *quorum_args, *scram],
    )


def _add_missing_principals(spec: BrokerSpec, timeout_s: float) -> None:
    """SCRAM credentials for principals named since storage was formatted (a new service),
    added as admin through the broker (confluent-kafka: aiokafka's admin has no SCRAM API)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        # The documented names; the package has no __all__, so strict mypy thinks they are
        # not re-exported.
        AdminClient,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialAlteration,
        UserScramCredentialUpsertion,
    )

    passwords = spec.passwords()
    config: dict[str, str | int | float | bool] = {**spec.connection(ADMIN).librdkafka_config()}
    admin = AdminClient(config)
    try:
        described = admin.describe_user_scram_credentials(request_timeout=timeout_s)
        assert isinstance(described, concurrent.futures.Future)  # one future for all users
        known = described.result(timeout_s)
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, _SCRAM_ITERATIONS)
        upserts: list[UserScramCredentialAlteration] = [
            UserScramCredentialUpsertion(name, info, password.get_secret_value().encode())
            for name, password in passwords.items()
            if name not in known
        ]
        if upserts:
            for future in admin.alter_user_scram_credentials(upserts).values():
                future.result(timeout_s)
    except KafkaException as exc:
        raise BrokerError(f"adding SCRAM credentials on {spec.bootstrap} failed: {exc}") from None


def _scram_argument(name: str, password: SecretStr) -> str:
    """A SCRAM credential for ``kafka-storage format --add-scram`` as salt and salted password
    (PBKDF2, as RFC 5802's Hi()): the password itself never appears on a command line, where
    any local user could read it from the process list."""
    salt = os.urandom(32)
    salted = hashlib.pbkdf2_hmac(
        "sha512", password.get_secret_value().encode(), salt, _SCRAM_ITERATIONS
    )
    b64 = base64.b64encode
    return (
        f"{_SCRAM}=[name={name},iterations={_SCRAM_ITERATIONS},"
        f'salt="{b64(salt).decode()}",saltedpassword="{b64(salted).decode()}"]'
    )


def _run_tool(spec: BrokerSpec, command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        reason = last_error(done.stdout + done.stderr)
        raise BrokerError(f"formatting Kafka storage in {spec.data_dir} failed: {reason}")
    return done.stdout


@dataclass(frozen=True)
class LogMarks:
    """Sizes of the log files before a start, so a crash is explained by this run's lines."""

    server: int = 0
    console: int = 0

    @staticmethod
    def take(spec: BrokerSpec) -> LogMarks:
        return LogMarks(file_size(spec.log_file), file_size(spec.console_file))


@dataclass(frozen=True)
class NodeStart:
    """A broker process starting: ``process`` when this one started it, None when it was
    found running (started by another process, perhaps still starting up)."""

    spec: BrokerSpec
    pid: int
    process: subprocess.Popen[bytes] | None = None
    logs_seen: LogMarks = LogMarks()

    def wait_until_ready(self, deadline: float) -> None:
        """Returns once the node answers a metadata request; BrokerError if it exits or
        ``deadline`` (``time.monotonic``) passes first."""
        spec = self.spec
        started = wait_for_start(self.pid, self.process, deadline, self._answers)
        if started == "exited":
            spec.pid_file.unlink(missing_ok=True)
            raise BrokerError(f"Kafka broker exited during start-up: {self._crash_reason()}")
        if started == "late":
            raise BrokerError(
                f"Kafka broker pid {self.pid} did not answer on {spec.bootstrap} in time; "
                f"see {spec.log_file} (stop it with down())"
            )

    def _answers(self, remaining_s: float) -> bool:
        return port_open(self.spec.port) and run_async(
            _answers_metadata(self.spec.connection(ADMIN), min(remaining_s, 5.0))
        )

    def _crash_reason(self) -> str:
        """The most telling line this run wrote to the broker's logs, and the file it is in."""
        spec, seen = self.spec, self.logs_seen
        for path, offset in ((spec.log_file, seen.server), (spec.console_file, seen.console)):
            text = read_from(path, offset)
            if text.strip():
                return f"{last_error(text)} (see {path})"
        return f"no output (see {spec.console_file})"


async def _answers_metadata(kafka: KafkaConnection, budget_s: float) -> bool:
    """True when the broker returns cluster metadata that lists at least one broker."""
    admin = AIOKafkaAdminClient(
        **kafka.client_options(), request_timeout_ms=max(int(budget_s * 1000), 1000)
    )
    try:
        async with asyncio.timeout(budget_s):
            await admin.start()
            cluster = await admin.describe_cluster()
        return bool(cluster.get("brokers"))
    except Exception:  # not ready yet: connection refused, timeout, not-yet-registered node
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def broker_pid(spec: BrokerSpec) -> int | None:
    """The pid from the pid file if that process is alive and is this home's broker."""
    return owned_pid(spec.pid_file, _KAFKA_MAIN.encode(), str(spec.config_file).encode())


def private_spec(home: Path, secure: bool = False, principals: Iterable[str] = ()) -> BrokerSpec:
    """A broker of its own (tests, benchmarks): a fresh home and two distinct free ports."""
    port, controller_port = free_ports(2)
    return BrokerSpec(
        home=home,
        port=port,
        controller_port=controller_port,
        secure=secure,
        principals=tuple(principals),
    )
