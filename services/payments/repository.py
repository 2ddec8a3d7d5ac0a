"""Payments' statements: accounts, payments, applied deposits, orders cancelled before
any payment and the calls made to the payment provider, for the handlers and the API. Rows a
handler changes are locked first."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from events.prepared import Row
from events.repository import InsertOnce, KeyedRows, Repository
from schemas.models import FundsDeposited
from services.payments.domain import INSUFFICIENT_FUNDS, Account, Payment, PaymentStatus
from services.payments.tables import accounts, attempts, deposits, payments, tombstones

_DEPOSITS = InsertOnce(deposits.c.deposit_id)
_ACCOUNTS = KeyedRows(accounts.c.customer_id)
_PAYMENTS = KeyedRows(payments.c.order_id)
_TOMBSTONES = KeyedRows(tombstones.c.order_id)
_ATTEMPTS = KeyedRows(attempts.c.idempotency_key)


class PaymentsRepository(Repository):
    """Payments' rows in one session (a unit of work's, or a read's)."""

    __slots__ = ()

    async def record_deposit(self, deposit: FundsDeposited) -> bool:
        """Records a deposit by its id; False when it was recorded already (under another
        event id), so that it credits once."""
        return await _DEPOSITS.add(self.session, deposit.model_dump())

    async def lock_account(self, customer_id: str) -> Account | None:
        """The customer's stored account, locked; None for a customer never credited."""
        row = await _ACCOUNTS.get(self.session, customer_id, lock=True)
        if row is None:
            return None
        return Account(
            customer_id,
            balance=row["balance_cents"],
            deposited=row["deposited_cents"],
            captured=row["captured_cents"],
            refunded=row["refunded_cents"],
        )

    async def save_account(self, account: Account, now: datetime, *, new: bool = False) -> None:
        """Writes the account back (``new``: inserts it)."""
        figures = {
            "balance_cents": account.balance,
            "deposited_cents": account.deposited,
            "captured_cents": account.captured,
            "refunded_cents": account.refunded,
            "updated_at": now,
        }
        if new:
            figures |= {"customer_id": account.customer_id, "created_at": now}
            await _ACCOUNTS.insert(self.session, figures)
        else:
            await _ACCOUNTS.set(self.session, account.customer_id, **figures)

    async def payment(self, order_id: str, *, lock: bool = False) -> Payment | None:
        found = await _PAYMENTS.get(self.session, order_id, lock=lock)
        if found is None:
            return None
        return Payment(
            order_id,
            found["payment_id"],
            found["customer_id"],
            found["amount_cents"],
            PaymentStatus(found["status"]),
        )

    async def insert_payment(
        self, payment: Payment, now: datetime, reason: str = INSUFFICIENT_FUNDS
    ) -> None:
        """A new payment row; ``reason``: why a DECLINED one was declined."""
        declined = payment.status is PaymentStatus.DECLINED
        await _PAYMENTS.insert(
            self.session,
            {
                "order_id": payment.order_id,
                "payment_id": payment.payment_id,
                "customer_id": payment.customer_id,
                "amount_cents": payment.amount,
                "status": payment.status.value,
                "reason": reason if declined else None,
                "created_at": now,
                "updated_at": now,
            },
        )

    async def set_payment_status(self, payment: Payment, reason: str | None, now: datetime) -> None:
        status = payment.status.value
        await _PAYMENTS.set(
            self.session, payment.order_id, status=status, reason=reason, updated_at=now
        )

    async def tombstoned(self, order_id: str) -> bool:
        """Whether the order was cancelled before any payment (a charge must not follow)."""
        return await _TOMBSTONES.get(self.session, order_id) is not None

    async def tombstone(self, order_id: str, reason: str, cancelled_at: datetime) -> None:
        row = {"order_id": order_id, "reason": reason, "cancelled_at": cancelled_at}
        await _TOMBSTONES.insert(self.session, row)

    async def account_row(self, customer_id: str) -> Row | None:
        return await _ACCOUNTS.get(self.session, customer_id)

    async def payment_row(self, order_id: str) -> Row | None:
        return await _PAYMENTS.get(self.session, order_id)

    async def record_attempt(
        self,
        key: str,
        *,
        order_id: str,
        operation: str,
        customer_id: str,
        amount: int | None,
        status: int,
        answer: dict[str, Any],
        now: datetime,
    ) -> None:
        """Stores a provider call and its answer (the same key again: its latest answer,
        which the provider gives unchanged for a key)."""
        body = json.dumps(answer, sort_keys=True)
        if await _ATTEMPTS.set(self.session, key, status=status, answer=body):
            return
        row = {
            "idempotency_key": key,
            "order_id": order_id,
            "operation": operation,
            "customer_id": customer_id,
            "amount_cents": amount,
            "status": status,
            "answer": body,
            "created_at": now,
        }
        await _ATTEMPTS.insert(self.session, row)

    async def attempt_answer(self, key: str) -> tuple[int, dict[str, Any]] | None:
        """The stored status and answer of the call made under ``key``; None if none was."""
        row = await _ATTEMPTS.get(self.session, key)
        if row is None:
            return None
        answer: dict[str, Any] = json.loads(row["answer"])
        return row["status"], answer
