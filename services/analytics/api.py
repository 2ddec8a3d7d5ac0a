"""Analytics over HTTP, on faust's own web server: the windows as JSON, health, metrics.

The windows and ``/metrics`` need an operator token (``events.auth``); faust's web server
is aiohttp, not FastAPI, so the check is made here with the same verifier and answers the
same 401/403 bodies."""

from __future__ import annotations

import contextlib
import time
from typing import cast

from faust.tables.manager import TableManager
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from events.auth import OPERATOR_READ, Authenticator, Unauthenticated
from services.analytics.pipeline import Analytics, window_parts
from services.analytics.windows import BadQuery, analytics_json, parse_query

SERVICE = "analytics"


async def refused(view: View, auth: Authenticator, request: Request) -> Response | None:
    """None when the request carries an operator token, else the 401 or 403 to answer."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    try:
        caller = await auth.verify(token.strip() if scheme.lower() == "bearer" else None)
    except Unauthenticated as exc:
        challenge = 'Bearer realm="choreo", error="invalid_token"'
        return view.json({"detail": str(exc)}, status=401, headers={"WWW-Authenticate": challenge})
    if not caller.has(OPERATOR_READ):
        detail = f"the token lacks the scope this needs: {OPERATOR_READ}"
        challenge = f'Bearer error="insufficient_scope", scope="{OPERATOR_READ}"'
        return view.json({"detail": detail}, status=403, headers={"WWW-Authenticate": challenge})
    return None


def register(analytics: Analytics, auth: Authenticator) -> None:
    app = analytics.app

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok", "service": SERVICE})

    @app.page("/ready")
    class Ready(View):
        async def get(self, request: Request) -> Response:
            # Ready once the tables are recovered and the agent has partitions to read:
            # before that, the figures served would be missing what is still to replay.
            checks = {"recovered": False, "assigned": False}
            with contextlib.suppress(Exception):
                tables = cast(TableManager, analytics.app.tables)
                checks["recovered"] = (
                    tables.recovery.completed.is_set() and not analytics.app.rebalancing
                )
                checks["assigned"] = bool(analytics.app.consumer.assignment())
            ok = all(checks.values())
            body: dict[str, object] = {"ready": ok, "checks": checks}
            if not ok:  # in words, as the other services' /ready (for `choreo status`)
                body["reasons"] = [
                    reason
                    for check, reason in (
                        ("recovered", "the tables are being recovered from their changelogs"),
                        ("assigned", "no partitions are assigned yet"),
                    )
                    if not checks[check]
                ]
            return self.json(body, status=200 if ok else 503)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            if (refusal := await refused(self, auth, request)) is not None:
                return refusal
            # As a header: aiohttp refuses a charset inside its content_type argument.
            return self.bytes(generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/api/v1/analytics")
    class Windows(View):
        async def get(self, request: Request) -> Response:
            if (refusal := await refused(self, auth, request)) is not None:
                return refusal
            try:
                spec, limit = parse_query(request.query)
            except BadQuery as exc:
                return self.json({"detail": str(exc)}, status=422)
            _, windowed = analytics.windows[spec.name]
            body = analytics_json(window_parts(windowed), spec, now=time.time(), limit=limit)
            return self.json(body)
