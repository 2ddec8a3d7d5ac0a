"""The payment provider's HTTP API (``/v1``, every POST under an ``Idempotency-Key``) and its
admin routes (the declined list). No bearer token: it plays a third party's API, which
knows nothing of choreo's tokens."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from events.db import Database
from events.http_input import STORABLE_TEXT
from services.provider import repository
from services.provider.domain import decline_reason
from services.standin.http import idempotency_key, idempotent

MAX_CENTS = 10**12
Text = Annotated[str, Field(min_length=1, max_length=200, pattern=STORABLE_TEXT)]
Cents = Annotated[int, Field(ge=0, le=MAX_CENTS)]
Id = Annotated[str, Path(min_length=1, max_length=64, pattern=STORABLE_TEXT)]
Key = Annotated[str, Depends(idempotency_key)]


@dataclass
class Policy:
    """What the provider declines; the declined list changes at run time (admin)."""

    max_amount_cents: int
    declined: set[str] = field(default_factory=set)


class AuthoriseIn(BaseModel):
    reference: Text  # the order id
    customer_id: Text
    amount_cents: Cents


class AmountIn(BaseModel):
    amount_cents: Cents


class DeclinedIn(BaseModel):
    customers: list[Text] = Field(max_length=10_000)


def install(policy: Policy) -> Callable[[FastAPI, Database, Callable[..., None]], None]:
    def add(app: FastAPI, db: Database, admin_only: Callable[..., None]) -> None:
        @app.post("/v1/authorisations")
        async def authorise(body: AuthoriseIn, request: Request, key: Key) -> JSONResponse:
            async def act(session: AsyncSession) -> tuple[int, dict[str, Any]]:
                reason = decline_reason(
                    body.customer_id,
                    body.amount_cents,
                    declined=frozenset(policy.declined),
                    max_amount_cents=policy.max_amount_cents,
                )
                if reason is not None:
                    return 402, {
                        "status": "declined",
                        "reason": reason,
                        "reference": body.reference,
                    }
                return await repository.authorise(
                    session,
                    reference=body.reference,
                    customer_id=body.customer_id,
                    amount_cents=body.amount_cents,
                )

            return await idempotent(db, request, key, body.model_dump(), act)

        @app.post("/v1/authorisations/{authorisation_id}/capture")
        async def capture(
            authorisation_id: Id, body: AmountIn, request: Request, key: Key
        ) -> JSONResponse:
            async def act(session: AsyncSession) -> tuple[int, dict[str, Any]]:
                return await repository.capture(session, authorisation_id, body.amount_cents)

            return await idempotent(db, request, key, body.model_dump(), act)

        @app.post("/v1/authorisations/{authorisation_id}/void")
        async def void(authorisation_id: Id, request: Request, key: Key) -> JSONResponse:
            async def act(session: AsyncSession) -> tuple[int, dict[str, Any]]:
                return await repository.void(session, authorisation_id)

            return await idempotent(db, request, key, {}, act)

        @app.post("/v1/captures/{capture_id}/refunds")
        async def refund(
            capture_id: Id, body: AmountIn, request: Request, key: Key
        ) -> JSONResponse:
            async def act(session: AsyncSession) -> tuple[int, dict[str, Any]]:
                return await repository.refund(session, capture_id, body.amount_cents)

            return await idempotent(db, request, key, body.model_dump(), act)

        @app.get("/v1/ledger")
        async def ledger() -> dict[str, Any]:
            async with db.session() as session:
                return {"customers": await repository.ledger(session)}

        @app.get("/v1/ledger/{customer_id}")
        async def customer_ledger(customer_id: Id) -> dict[str, Any]:
            async with db.session() as session:
                rows = await repository.ledger(session, customer_id)
            row = rows.get(customer_id, {"captured_cents": 0, "refunded_cents": 0})
            return {"customer_id": customer_id, **row}

        admin = [Depends(admin_only)]

        @app.get("/admin/declined", dependencies=admin)
        async def declined() -> dict[str, list[str]]:
            return {"customers": sorted(policy.declined)}

        @app.put("/admin/declined", dependencies=admin)
        async def set_declined(body: DeclinedIn) -> dict[str, list[str]]:
            policy.declined = set(body.customers)
            return {"customers": sorted(policy.declined)}

    return add
