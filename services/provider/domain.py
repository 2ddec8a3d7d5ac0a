"""The payment provider's rules: when it declines, and which moves an authorisation, a
capture and its refunds may make. Pure: standard library only, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    AUTHORISED = "authorised"
    CAPTURED = "captured"
    VOIDED = "voided"


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int  # the HTTP status that says it
    reason: str


def decline_reason(
    customer_id: str, amount_cents: int, *, declined: frozenset[str], max_amount_cents: int
) -> str | None:
    """Why an authorisation is declined (a definite business answer), or None."""
    if customer_id in declined:
        return "the card issuer declined the customer's card"
    if amount_cents > max_amount_cents:
        return f"amount {amount_cents} exceeds the provider's limit of {max_amount_cents}"
    return None


def capture_refusal(status: Status, authorised_cents: int, amount_cents: int) -> Refusal | None:
    if status is Status.VOIDED:
        return Refusal(409, "the authorisation was voided")
    if status is Status.CAPTURED:
        return Refusal(409, "the authorisation was captured already")
    if amount_cents > authorised_cents:
        return Refusal(422, f"capture of {amount_cents} exceeds the authorised {authorised_cents}")
    return None


def void_refusal(status: Status) -> Refusal | None:
    """A captured authorisation cannot be released (refund the capture); voiding a voided
    one again is fine."""
    if status is Status.CAPTURED:
        return Refusal(409, "the authorisation was captured: refund the capture instead")
    return None


def refund_refusal(captured_cents: int, refunded_cents: int, amount_cents: int) -> Refusal | None:
    if refunded_cents + amount_cents > captured_cents:
        return Refusal(
            422,
            f"refunds would exceed the capture: captured {captured_cents}, refunded "
            f"{refunded_cents}, asked {amount_cents}",
        )
    return None
