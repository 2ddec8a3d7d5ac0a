"""Payments' calls to the payment provider: authorise and capture an order's total, refund a
capture, and settle an order cancelled before its charge was recorded.

Why no transaction of its own before each call: the key of every call is a function of what
must happen once (``domain.idempotency_key``: operation and order id), not a fresh id. A call
runs inside the handler's unit of work and its answer is stored there (``payments_attempts``),
with the effect. When that transaction does not commit (a crash between the provider's answer
and the commit, a batch rolled back, a partition paused while the provider is down) the event
is redelivered and re-sends the same key, and the provider answers as the first time instead
of charging again. A record written before the call in a transaction of its own would buy
nothing more, and SQLite's single connection cannot give one inside the consumer's unit of
work anyway.

Transient failures (timeouts, 5xx, the breaker open) are the client's
(``events.dependency``): they raise ``DependencyUnavailable``, the transaction rolls back
and the consumer pauses the partition. Only a definite answer comes back here: a decline
(402) becomes the order's ``PaymentDeclined``; any other unexpected answer is a
``PermanentError`` naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from events.dependency import Answer, Dependency, DependencySettings
from events.envelope import utcnow
from events.routing import PermanentError
from services.payments.domain import idempotency_key
from services.payments.repository import PaymentsRepository

DECLINED_BY_PROVIDER = "declined by the payment provider"


@dataclass(frozen=True, slots=True)
class Charged:
    authorisation_id: str
    capture_id: str


@dataclass(frozen=True, slots=True)
class Declined:
    reason: str


class Provider:
    """The payment provider as payments' handlers use it: one client (timeouts, retries with
    the same key, a circuit breaker) per process."""

    def __init__(
        self, settings: DependencySettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        """``transport``: httpx's own (default), or a test's that loses an answer."""
        self.dependency = Dependency(settings, transport=transport)

    async def charge(
        self, repo: PaymentsRepository, order_id: str, customer_id: str, amount: int
    ) -> Charged | Declined:
        """Authorises and captures ``amount`` for the order; Declined with the provider's
        reason when it turns the authorisation down."""
        body = {"reference": order_id, "customer_id": customer_id, "amount_cents": amount}
        auth = await self._post(repo, "authorise", order_id, customer_id, amount, body)
        if auth.status == 402:
            return Declined(str(auth.body.get("reason") or DECLINED_BY_PROVIDER))
        authorisation_id = _field(auth, 201, "authorise", order_id, "authorisation_id")
        path = f"/v1/authorisations/{authorisation_id}/capture"
        capture = await self._post(
            repo, "capture", order_id, customer_id, amount, {"amount_cents": amount}, path
        )
        capture_id = _field(capture, 200, "capture", order_id, "capture_id")
        return Charged(authorisation_id, capture_id)

    async def refund(
        self, repo: PaymentsRepository, order_id: str, customer_id: str, amount: int
    ) -> bool:
        """Refunds the order's capture at the provider; False when the provider never
        captured it (a payment made while payments ran without a provider)."""
        stored = await repo.attempt_answer(idempotency_key("capture", order_id))
        if stored is None:
            return False
        capture_id = stored[1]["capture_id"]
        path = f"/v1/captures/{capture_id}/refunds"
        answer = await self._post(
            repo, "refund", order_id, customer_id, amount, {"amount_cents": amount}, path
        )
        _field(answer, 201, "refund", order_id, "refund_id")
        return True

    async def settle_cancelled(
        self, repo: PaymentsRepository, order_id: str, customer_id: str, amount: int
    ) -> None:
        """An order cancelled before its charge was recorded may still have reached the
        provider (the charge's transaction rolled back, then the cancellation came first):
        the outcome is resolved, never guessed. The authorisation is asked for again under
        its key (the first answer, or a new hold) and voided; one captured already is
        refunded."""
        body = {"reference": order_id, "customer_id": customer_id, "amount_cents": amount}
        auth = await self._post(repo, "authorise", order_id, customer_id, amount, body)
        if auth.status == 402:
            return  # nothing was held, nothing to give back
        authorisation_id = _field(auth, 201, "authorise", order_id, "authorisation_id")
        path = f"/v1/authorisations/{authorisation_id}/void"
        void = await self._post(repo, "void", order_id, customer_id, None, {}, path)
        if void.status == 200:
            return
        if void.status != 409:
            raise _unexpected(void, "void", order_id)
        # Captured before the cancellation won: the capture's own key gives its id back.
        capture = await self._post(
            repo,
            "capture",
            order_id,
            customer_id,
            amount,
            {"amount_cents": amount},
            f"/v1/authorisations/{authorisation_id}/capture",
        )
        _field(capture, 200, "capture", order_id, "capture_id")
        await self.refund(repo, order_id, customer_id, amount)

    async def _post(
        self,
        repo: PaymentsRepository,
        operation: str,
        order_id: str,
        customer_id: str,
        amount: int | None,
        body: Mapping[str, Any],
        path: str = "/v1/authorisations",
    ) -> Answer:
        key = idempotency_key(operation, order_id)
        answer = await self.dependency.post(path, body, idempotency_key=key)
        await repo.record_attempt(
            key,
            order_id=order_id,
            operation=operation,
            customer_id=customer_id,
            amount=amount,
            status=answer.status,
            answer=answer.body,
            now=utcnow(),
        )
        return answer


def _field(answer: Answer, expected: int, operation: str, order_id: str, name: str) -> str:
    value = answer.body.get(name) if answer.status == expected else None
    if not isinstance(value, str) or not value:
        raise _unexpected(answer, operation, order_id)
    return value


def _unexpected(answer: Answer, operation: str, order_id: str) -> PermanentError:
    # A definite answer the saga has no step for (a 404, a 409, a 422): no retry changes it.
    return PermanentError(
        f"payment provider answered {answer.status} to {operation} of order {order_id}: "
        f"{answer.body}"
    )
