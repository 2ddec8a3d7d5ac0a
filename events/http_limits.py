"""Bounds on what one client can make a service's HTTP API do: requests for a host name the
service does not serve are a 400, and requests beyond a cap on those in progress are a 503
with Retry-After instead of a queue that grows without bound. Both answer JSON like every
other error of the API.

The host check is Starlette's ``TrustedHostMiddleware``; it answers in plain text, so
:class:`HostCheck` only turns its refusal into JSON. Starlette and uvicorn have no cap on
requests in progress (uvicorn's ``limit_concurrency`` counts connections, idle keep-alive
ones too, and answers plain text), hence the small :class:`ConcurrencyCap`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated

from fastapi import FastAPI
from pydantic import AfterValidator
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_ALLOWED_HOSTS = "localhost,127.0.0.1,[::1]"
"""The names a service is reached by on one machine (``choreo up``, its tests, a browser)."""

DEFAULT_MAX_CONCURRENT = 32
"""Requests in progress per service: on 2 cores a request takes a few milliseconds of CPU,
so 32 waiting is tens of milliseconds of work; more would queue on the database pool."""

EXEMPT_PATHS = frozenset({"/health", "/ready"})
"""Probes answer even when the service is full: a busy service is not a dead one."""

_ADMITTED = "choreo.host_admitted"  # scope key: the host check let the request through


def _host_patterns(value: str) -> str:
    """``ALLOWED_HOSTS`` normalised; ValueError naming a pattern TrustedHostMiddleware would
    refuse (with an assertion, at start-up)."""
    hosts = [h.strip().lower() for h in value.split(",") if h.strip()]
    if not hosts:
        raise ValueError("must name at least one host (or * for any)")
    for host in hosts:
        if "*" in host[1:] or (host.startswith("*") and host != "*" and host[:2] != "*."):
            raise ValueError(f"{host!r} is not a host name, *.domain or *")
    return ",".join(hosts)


AllowedHosts = Annotated[str, AfterValidator(_host_patterns)]
"""Comma-separated host names a service answers for (``*.example.com``: any subdomain;
``*``: any host, no check)."""


class HostCheck:
    """TrustedHostMiddleware for ``allowed_hosts``, its refusal a 400 with a JSON body."""

    def __init__(self, app: ASGIApp, allowed_hosts: str = DEFAULT_ALLOWED_HOSTS) -> None:
        self.app = app
        hosts = _host_patterns(allowed_hosts).split(",")
        self.check = TrustedHostMiddleware(self._admit, hosts, www_redirect=False)

    async def _admit(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[_ADMITTED] = True
        await self.app(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.check(scope, receive, send)  # a websocket is checked too; lifespan not
            return
        refused = False

        async def answer(message: Message) -> None:
            nonlocal refused
            if refused:
                return  # the refusal's plain-text body: the JSON one was sent instead
            if message["type"] == "http.response.start" and not scope.get(_ADMITTED):
                refused = True
                host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")[:100]
                body = {"detail": f"host {host!r} is not served here (see ALLOWED_HOSTS)"}
                await JSONResponse(body, status_code=400)(scope, receive, send)
                return
            await send(message)

        await self.check(scope, receive, answer)


class ConcurrencyCap:
    """At most ``limit`` requests in progress; the next one is a 503 with Retry-After at
    once (paths in ``exempt`` are never counted nor refused)."""

    def __init__(
        self,
        app: ASGIApp,
        limit: int = DEFAULT_MAX_CONCURRENT,
        exempt: Collection[str] = EXEMPT_PATHS,
        retry_after_s: int = 1,
    ) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt
        self.retry_after = str(retry_after_s)
        self.in_progress = 0  # one event loop: no lock needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        if self.in_progress >= self.limit:
            body = {"detail": f"busy: {self.limit} requests in progress; retry shortly"}
            refusal = JSONResponse(body, 503, headers={"Retry-After": self.retry_after})
            await refusal(scope, receive, send)
            return
        self.in_progress += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_progress -= 1


def install_http_limits(
    app: FastAPI,
    *,
    allowed_hosts: str = DEFAULT_ALLOWED_HOSTS,
    max_concurrent: int = DEFAULT_MAX_CONCURRENT,
) -> None:
    """The host check outermost (a request for another host costs nothing), then the cap."""
    app.add_middleware(ConcurrencyCap, limit=max_concurrent)
    app.add_middleware(HostCheck, allowed_hosts=allowed_hosts)
