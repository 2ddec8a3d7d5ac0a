"""Payment rules: capture or decline an order once, refund a capture once. Standard library
only.

Per customer the books always balance: ``balance + captured - refunded == deposited``.
Every stored figure is a 64-bit integer: a deposit that would push the balance or the total
deposited past ``INT64_MAX`` is refused (``Refused``), and since captures never exceed the
balance and refunds never exceed captures, no other figure can pass it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

INSUFFICIENT_FUNDS = "insufficient funds"
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
