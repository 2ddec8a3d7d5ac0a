"""What every benchmark's entrypoint does: a broker (private, in a temporary directory, unless
``KAFKA_BOOTSTRAP_SERVERS`` is set), progress lines on stderr, SIGTERM unwinding through the
clean-ups, and a failure logged once (the caller exits 2)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TypeVar

from infra.broker import down, private_spec, up

T = TypeVar("T")
Say = Callable[[str], None]


def progress_for(name: str) -> Say:
    """Progress lines on stderr, stamped with the benchmark's name and the time."""

    def say(message: str) -> None:
        print(f"[{name} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    return say


@contextlib.contextmanager
def kafka(root: Path, say: Callable[[str], None]) -> Iterator[tuple[str, int | None]]:
    """Bootstrap servers and, for a broker started here, its pid; stops it on exit."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        say(f"using the broker at {external} (KAFKA_BOOTSTRAP_SERVERS)")
        yield external, None
        return
    spec = private_spec(root / "kafka")
    say(f"starting a private broker on {spec.bootstrap} in {spec.home}")
    try:
        status = up(spec)
        yield spec.bootstrap, status.pid
    finally:
        say("stopping the private broker")
        down(spec)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finallies that stop everything


def on_a_broker(prefix: str, say: Say, body: Callable[[str, int | None, Path], T]) -> T | None:
    """``body(bootstrap, broker pid or None, temporary directory)`` with a broker; None when
    it failed (logged with its traceback once)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _terminate)
    try:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            root = Path(tmp)
            with kafka(root, say) as (bootstrap, broker_pid):
                return body(bootstrap, broker_pid, root)
    except Exception as exc:  # the report names the failure instead of a traceback wall
        logging.getLogger("bench").exception("benchmark failed: %s", exc)
        return None
