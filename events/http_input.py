"""Guards every service's HTTP API against client input that would otherwise end in a 500:
a body larger than any request needs is a 413, and a validation error whose echoed input
JSON cannot carry (NaN, Infinity, a lone UTF-16 surrogate, a megabyte string) is still a
422 naming the field.

FastAPI answers 422 for invalid input by echoing it back; its encoder then fails on
exactly the inputs above, and the client sees a 500. Starlette has no request size limit
and uvicorn bounds only headers, hence the small ASGI middleware here.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STORABLE_TEXT = r"^[^\x00]*$"
"""Pattern for string query and path parameters: PostgreSQL cannot take NUL in a text value,
so a NUL would be a database error (500) instead of a 422 or a plain 404."""

MAX_BODY_BYTES = 64 * 1024
"""The default of ``HTTP_MAX_BODY_BYTES``: above the largest valid request sent as UTF-8
(an order of 100 lines, every text at its longest in four-byte characters: about 60 KB).
The same order with every character JSON-escaped (``\\ud83d\\ude00``) is about 170 KB and
needs the setting raised."""

_ECHO_CHARS = 200  # of an invalid string echoed in a 422: enough to recognise it
_ECHO_ITEMS = 20  # of an invalid list or object echoed in a 422


def safe_echo(value: Any, depth: int = 0) -> Any:
    """``value`` made encodable as strict JSON and short: non-finite numbers and unknown
    objects as text, surrogates escaped, long strings and collections cut."""
    if isinstance(value, bool | int | None):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    if isinstance(value, str):
        text = value.encode("utf-8", "backslashreplace").decode("utf-8")
        return text if len(text) <= _ECHO_CHARS else text[:_ECHO_CHARS] + "..."
    if depth > 4:
        return "..."
    if isinstance(value, dict):
        items = list(value.items())[:_ECHO_ITEMS]
        return {str(safe_echo(k, depth + 1)): safe_echo(v, depth + 1) for k, v in items}
    if isinstance(value, list | tuple):
        return [safe_echo(v, depth + 1) for v in value[:_ECHO_ITEMS]]
    return safe_echo(str(value), depth + 1)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [safe_echo(dict(e)) for e in exc.errors()]
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


class BodyLimit:
    """Refuses (413) a request body over ``limit`` bytes before the app parses any of it:
    a Content-Length over it is refused unread; a body without one (chunked) is read as it
    streams and refused as soon as it passes the limit, else handed on whole."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.limit:
                await self._too_large(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client left: let the app see it
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await self._too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"request body larger than {self.limit} bytes"
        await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)


def install_input_guards(app: FastAPI, max_body_bytes: int = MAX_BODY_BYTES) -> None:
    """Adds the body limit and the safe 422 answer to a service's app."""
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.add_exception_handler(RequestValidationError, _validation_error)
