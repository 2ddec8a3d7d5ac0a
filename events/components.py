"""The parts a service's process runs (relay, consumer, projection runner, HTTP server,
background tasks), and the one loop that starts, runs and stops them.

Every part is a ``Component``: an optional ``start`` (connects; retried with backoff while
the broker or the database is not there yet, for as long as the service is not stopping;
never after Kafka refused the service's principal: ``events.kafka_auth.KafkaRefused``),
an optional ``run(stop)`` (returns soon after ``stop`` is set), an optional ``close`` (what
it holds, released once everything has stopped) and an optional ``ready`` (its part of
``/ready``). Components start side by side: the HTTP API answers, and ``/ready`` says
what is still starting, while the consumer waits for the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI

from events.kafka_auth import KafkaRefused

log = logging.getLogger(__name__)

RETRY_INITIAL_S = 0.2
RETRY_MAX_S = 5.0


@dataclass
class Readiness:
    """A component's part of ``/ready``: its checks (shown as they are) and, when not ok,
    the reasons in words (for ``choreo status`` and whoever reads the probe)."""

    ok: bool
    checks: dict[str, object]
    reasons: list[str] = field(default_factory=list)


@dataclass
class Component:
    name: str
    run: Callable[[asyncio.Event], Awaitable[None]] | None = None
    start: Callable[[], Awaitable[None]] | None = None
    close: Callable[[], Awaitable[None]] | None = None
    ready: Callable[[], Awaitable[Readiness]] | None = None


async def start_with_retry(component: Component, stop: asyncio.Event) -> bool:
    """Starts the component, retrying with backoff until it starts (True) or ``stop`` is
    set (False). A failed ``start`` leaves nothing open: it cleans up after itself."""
    if component.start is None:
        return True
    delay = RETRY_INITIAL_S
    while not stop.is_set():
        try:
            await component.start()
            return True
        except KafkaRefused:
            raise  # a wrong password or a missing ACL: retrying cannot help
        except Exception as exc:
            log.warning("%s: cannot start yet (%s); retrying", component.name, exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()
            delay = min(delay * 2, RETRY_MAX_S)
    return False


async def _lifecycle(component: Component, stop: asyncio.Event) -> None:
    if component.run is not None and await start_with_retry(component, stop):
        await component.run(stop)


async def run_components(
    name: str, components: Sequence[Component], stop: asyncio.Event, shutdown_timeout_s: float
) -> None:
    """Runs the components until ``stop`` is set or one of them ends; then stops them all
    within ``shutdown_timeout_s`` and closes them, last first. A component's failure is
    raised once the others have stopped."""
    tasks = [asyncio.create_task(_lifecycle(c, stop), name=c.name) for c in components if c.run]
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    failed = [t for t in done if t is not stopper and t.exception() is not None]
    stop.set()
    try:
        async with asyncio.timeout(shutdown_timeout_s):
            await asyncio.gather(*tasks, stopper, return_exceptions=True)
    except TimeoutError:
        log.error("%s: shutdown took longer than %.0fs", name, shutdown_timeout_s)
    await close_components(name, components)
    if failed:
        raise failed[0].exception()  # type: ignore[misc]


async def close_components(name: str, components: Sequence[Component]) -> None:
    """Releases what the components hold, last first; a failure is logged, not raised, so
    the others are closed too."""
    for component in reversed(components):
        if component.close is not None:
            try:
                await component.close()
            except Exception:
                log.exception("%s: closing %s failed", name, component.name)


class HttpServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The service owns SIGTERM/SIGINT: it stops consuming before the API goes away.
        yield


def uvicorn_server(app: FastAPI, host: str, port: int) -> HttpServer:
    """uvicorn for a service's API, without its own signal handling or lifespan."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
    )
    return HttpServer(config)


def http_component(app: FastAPI, host: str, port: int) -> Component:
    """The service's API on ``host:port``, until the service stops."""
    server = uvicorn_server(app, host, port)

    async def run(stop: asyncio.Event) -> None:
        async def exit_on_stop() -> None:
            await stop.wait()
            server.should_exit = True

        stopping = asyncio.create_task(exit_on_stop())
        try:
            await server.serve()
        finally:
            stopping.cancel()

    return Component("http", run=run)
