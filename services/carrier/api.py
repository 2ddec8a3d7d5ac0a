"""The carrier's HTTP API (``/v1``, every POST under an ``Idempotency-Key``). No bearer
token: it plays a third party's API, which knows nothing of choreo's tokens."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from events.db import Database
from events.http_input import STORABLE_TEXT
from services.addresses import serviceable
from services.carrier import repository
from services.carrier.domain import Status
from services.standin.http import idempotency_key, idempotent

Text = Annotated[str, Field(max_length=200, pattern=STORABLE_TEXT)]
Id = Annotated[str, Path(min_length=1, max_length=64, pattern=STORABLE_TEXT)]
Key = Annotated[str, Depends(idempotency_key)]


class Address(BaseModel):
    line1: Text | None = None
    city: Text | None = None
    postal_code: Annotated[str, Field(max_length=40, pattern=STORABLE_TEXT)]
    country: Annotated[str, Field(max_length=40, pattern=STORABLE_TEXT)]


class BookingIn(BaseModel):
    reference: Annotated[str, Field(min_length=1, max_length=200, pattern=STORABLE_TEXT)]
    address: Address


def install(countries: frozenset[str]) -> Callable[[FastAPI, Database, Callable[..., None]], None]:
    def add(app: FastAPI, db: Database, admin_only: Callable[..., None]) -> None:
        @app.post("/v1/bookings")
        async def book(body: BookingIn, request: Request, key: Key) -> JSONResponse:
            async def act(session: AsyncSession) -> tuple[int, dict[str, Any]]:
                address = body.address
                reason = serviceable(address.country, address.postal_code, countries)
                if reason is not None:
                    return 422, {
                        "status": "undeliverable",
                        "reason": reason,
                        "reference": body.reference,
                    }
                return await repository.book(
                    session,
                    reference=body.reference,
                    country=address.country,
                    postal_code=address.postal_code,
                )

            return await idempotent(db, request, key, body.model_dump(), act)

        @app.post("/v1/bookings/{booking_id}/cancel")
        async def cancel(booking_id: Id, request: Request, key: Key) -> JSONResponse:
            async def act(session: AsyncSession) -> tuple[int, dict[str, Any]]:
                return await repository.cancel(session, booking_id)

            return await idempotent(db, request, key, {}, act)

        @app.get("/v1/bookings")
        async def bookings(
            status: Status | None = None,
            reference: Annotated[str | None, Query(max_length=200, pattern=STORABLE_TEXT)] = None,
        ) -> dict[str, Any]:
            async with db.session() as session:
                return {"bookings": await repository.listed(session, status, reference)}

    return add
