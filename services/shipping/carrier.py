"""Shipping's calls to the carrier: book a paid order's shipment, cancel a booking, and settle
an order cancelled before its booking was recorded.

Why no transaction of its own before each call: the key of every call is a function of what
must happen once (``domain.idempotency_key``: operation and order id), not a fresh id. A call
runs inside the handler's unit of work and its answer is stored there
(``shipping_carrier_calls``), with the effect. When that transaction does not commit (a
crash, a batch rolled back, a partition paused while the carrier is down) the event is
redelivered and re-sends the same key, and the carrier answers as the first time instead of
booking again. SQLite's single connection could not give a separate transaction inside the
consumer's unit of work anyway.

Transient failures (timeouts, 5xx, the breaker open) are the client's
(``events.dependency``): they raise ``DependencyUnavailable``, the transaction rolls back
and the consumer pauses the partition. Only a definite answer comes back here: 422
(undeliverable) becomes the order's ``ShipmentFailed``; any other unexpected answer is a
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
from schemas.models import Address
from services.addresses import UNSERVICEABLE
from services.shipping.domain import idempotency_key
from services.shipping.repository import ShippingRepository


@dataclass(frozen=True, slots=True)
class Booked:
    booking_id: str
    carrier: str


@dataclass(frozen=True, slots=True)
class Undeliverable:
    reason: str


class Carrier:
    """The carrier as shipping's handlers use it: one client (timeouts, retries with the same
    key, a circuit breaker) per process."""

    def __init__(
        self, settings: DependencySettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        """``transport``: httpx's own (default), or a test's that loses an answer."""
        self.dependency = Dependency(settings, transport=transport)

    async def book(
        self, repo: ShippingRepository, order_id: str, address: Address
    ) -> Booked | Undeliverable:
        """Books the order's shipment; Undeliverable with the carrier's reason when it will
        not take the address."""
        where = {
            "line1": address.line1,
            "city": address.city,
            "postal_code": address.postal_code,
            "country": address.country,
        }
        body = {"reference": order_id, "address": where}
        answer = await self._post(repo, "book", order_id, "/v1/bookings", body)
        if answer.status == 422 and answer.body.get("status") == "undeliverable":
            return Undeliverable(str(answer.body.get("reason") or UNSERVICEABLE))
        booking_id = _field(answer, 201, "book", order_id, "booking_id")
        return Booked(booking_id, _field(answer, 201, "book", order_id, "carrier"))

    async def cancel(self, repo: ShippingRepository, order_id: str) -> bool:
        """Cancels the order's booking at the carrier; False when the carrier never booked
        it (a shipment scheduled while shipping ran without a carrier)."""
        stored = await repo.call_answer(idempotency_key("book", order_id))
        if stored is None or stored[0] != 201:
            return False
        booking_id = stored[1]["booking_id"]
        path = f"/v1/bookings/{booking_id}/cancel"
        answer = await self._post(repo, "cancel", order_id, path, {})
        _field(answer, 200, "cancel", order_id, "status")
        return True

    async def settle_cancelled(
        self, repo: ShippingRepository, order_id: str, address: Address
    ) -> None:
        """A payment captured for an order cancelled before its booking was recorded may
        still have been booked (the booking's transaction rolled back, then the cancellation
        came first): the outcome is resolved, never guessed. The booking is asked for again
        under its key (the first answer, or a new booking) and cancelled."""
        if isinstance(await self.book(repo, order_id, address), Booked):
            await self.cancel(repo, order_id)

    async def _post(
        self,
        repo: ShippingRepository,
        operation: str,
        order_id: str,
        path: str,
        body: Mapping[str, Any],
    ) -> Answer:
        key = idempotency_key(operation, order_id)
        answer = await self.dependency.post(path, body, idempotency_key=key)
        await repo.record_call(
            key,
            order_id=order_id,
            operation=operation,
            status=answer.status,
            answer=answer.body,
            now=utcnow(),
        )
        return answer


def _field(answer: Answer, expected: int, operation: str, order_id: str, name: str) -> str:
    value = answer.body.get(name) if answer.status == expected else None
    if not isinstance(value, str) or not value:
        # A definite answer the saga has no step for (a 404, a 409): no retry changes it.
        raise PermanentError(
            f"carrier answered {answer.status} to {operation} of order {order_id}: {answer.body}"
        )
    return value
