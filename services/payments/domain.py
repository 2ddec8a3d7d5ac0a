"""Payment rules: capture or decline an order once, refund a capture once. Standard library
only.

Per customer the books always balance: ``balance + captured - refunded == deposited``.
Every stored figure is a 64-bit integer: a deposit that would push the balance or the total
deposited past ``INT64_MAX`` is refused (``Refused``), and since captures never exceed the
balance and refunds never exceed captures, no other figure can pass it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

INSUFFICIENT_FUNDS = "insufficient funds"
# Fixed for good: every key ever sent to the provider derives from it, so a redelivered
# event after an upgrade still re-sends the key of its first call.
IDEMPOTENCY_NAMESPACE = uuid.UUID("5d0c2a43-9a8e-4c1b-8f1e-6b3f1c9e0a71")
INT64_MAX = 2**63 - 1  # what a BIGINT column (and SQLite's INTEGER) holds


class Refused(ValueError):
    """A request the books cannot take (a negative amount, a sum past ``INT64_MAX``); no
    retry changes that, so the handler's event is dead-lettered with this reason."""


class PaymentStatus(StrEnum):
    CAPTURED = "CAPTURED"
    DECLINED = "DECLINED"
    REFUNDED = "REFUNDED"


@dataclass
class Account:
    """A customer's money in cents; an unknown customer is an empty account."""

    customer_id: str
    balance: int = 0
    deposited: int = 0
    captured: int = 0
    refunded: int = 0

    def deposit(self, amount: int) -> None:
        _not_negative(amount)
        if amount > INT64_MAX - max(self.balance, self.deposited):
            raise Refused(
                f"deposit of {amount} refused: {self.customer_id}'s deposited total "
                f"{self.deposited} would pass {INT64_MAX}"
            )
        self.balance += amount
        self.deposited += amount


@dataclass
class Payment:
    order_id: str
    payment_id: str
    customer_id: str
    amount: int
    status: PaymentStatus


def charge(
    account: Account,
    order_id: str,
    payment_id: str,
    amount: int,
    existing: Payment | None,
    cancelled: bool,
) -> Payment | None:
    """Captures ``amount`` when the balance covers it, else declines; None (nothing happens)
    when the order was cancelled or already has a payment, so no order is charged twice."""
    _not_negative(amount)
    if cancelled or existing is not None:
        return None
    if account.balance < amount:
        return Payment(order_id, payment_id, account.customer_id, amount, PaymentStatus.DECLINED)
    account.balance -= amount
    account.captured += amount
    return Payment(order_id, payment_id, account.customer_id, amount, PaymentStatus.CAPTURED)


def decline(account: Account, payment: Payment) -> Payment:
    """The provider declined a capture the books allowed (``charge``'s CAPTURED payment):
    the account has the amount back, and the payment is DECLINED."""
    if payment.status is not PaymentStatus.CAPTURED:
        raise ValueError(f"payment {payment.payment_id} is {payment.status}, not CAPTURED")
    account.balance += payment.amount
    account.captured -= payment.amount
    return Payment(
        payment.order_id,
        payment.payment_id,
        payment.customer_id,
        payment.amount,
        PaymentStatus.DECLINED,
    )


def idempotency_key(operation: str, order_id: str) -> str:
    """The provider's idempotency key for ``operation`` (authorise, capture, refund, void)
    on an order: a function of what must happen once, so every retry, redelivery or restart
    sends the same key and the provider acts once."""
    return str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"payments:{operation}:{order_id}"))


def refund(account: Account, payment: Payment) -> bool:
    """Gives a capture back; False (nothing changes) unless the payment is CAPTURED."""
    if payment.status is not PaymentStatus.CAPTURED:
        return False
    if account.customer_id != payment.customer_id:
        raise ValueError(f"payment {payment.payment_id} is not {account.customer_id}'s")
    account.balance += payment.amount
    account.refunded += payment.amount
    payment.status = PaymentStatus.REFUNDED
    return True


def _not_negative(amount: int) -> None:
    if amount < 0:
        raise Refused(f"amount must not be negative, got {amount}")
