"""What every benchmark's entrypoint does: a broker (private, in a temporary directory, unless
``KAFKA_BOOTSTRAP_SERVERS`` is set; secured on request), progress lines on stderr, SIGTERM
unwinding through the clean-ups, and a failure logged once (the caller exits 2)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TypeVar

from events.kafka import KafkaConnection
from events.settings import PlatformSettings
from infra.broker import ADMIN, down, private_spec, up

T = TypeVar("T")
Say = Callable[[str], None]


def progress_for(name: str) -> Say:
    """Progress lines on stderr, stamped with the benchmark's name and the time."""

    def say(message: str) -> None:
        print(f"[{name} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    return say


@dataclass(frozen=True)
class Broker:
    """How the benchmark's own clients reach the broker (admin on a secured one), its pid
    when started here, and each service's own ``KAFKA_*`` settings (its principal)."""

    kafka: KafkaConnection
    pid: int | None = None
    service_env: Callable[[str], Mapping[str, str]] = field(default=lambda name: {})


def _inherited(name: str) -> Mapping[str, str]:
    return {}  # a plaintext or external broker: the services inherit the settings


@contextlib.contextmanager
def kafka_broker(
    root: Path, say: Callable[[str], None], secure: bool = False, principals: Iterable[str] = ()
) -> Iterator[Broker]:
    """The broker ``KAFKA_BOOTSTRAP_SERVERS`` and the other ``KAFKA_*`` settings name, else a
    private one (secured with ``secure``: a principal per name in ``principals``), stopped
    on exit."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        say(f"using the broker at {external} (KAFKA_BOOTSTRAP_SERVERS)")
        yield Broker(PlatformSettings().kafka_connection())  # services inherit the settings
        return
    spec = private_spec(root / "kafka", secure=secure, principals=principals)
    kind = "secured private broker (SASL_SSL, SCRAM-SHA-512)" if secure else "private broker"
    say(f"starting a {kind} on {spec.bootstrap} in {spec.home}")
    try:
        status = up(spec)
        service_env = spec.environment if secure else _inherited
        yield Broker(spec.connection(ADMIN), status.pid, service_env)
    finally:
        say("stopping the private broker")
        down(spec)


@contextlib.contextmanager
def kafka(root: Path, say: Callable[[str], None]) -> Iterator[tuple[str, int | None]]:
    """Bootstrap servers and, for a broker started here, its pid; stops it on exit."""
    with kafka_broker(root, say) as broker:
        yield broker.kafka.bootstrap, broker.pid


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finallies that stop everything


def on_a_secured_or_plain_broker(
    prefix: str,
    say: Say,
    body: Callable[[Broker, Path], T],
    secure: bool = False,
    principals: Iterable[str] = (),
) -> T | None:
    """``body(broker, temporary directory)`` with a broker (see :func:`kafka_broker`); None
    when it failed (logged with its traceback once)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _terminate)
    try:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            root = Path(tmp)
            with kafka_broker(root, say, secure, principals) as broker:
                return body(broker, root)
    except Exception as exc:  # the report names the failure instead of a traceback wall
        logging.getLogger("bench").exception("benchmark failed: %s", exc)
        return None


def on_a_broker(prefix: str, say: Say, body: Callable[[str, int | None, Path], T]) -> T | None:
    """``body(bootstrap, broker pid or None, temporary directory)`` with a plaintext broker."""
    return on_a_secured_or_plain_broker(
        prefix, say, lambda broker, root: body(broker.kafka.bootstrap, broker.pid, root)
    )
