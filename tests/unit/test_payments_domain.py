"""Payments' money rules, as a specification (no I/O)."""

from __future__ import annotations

import copy

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from services.payments.domain import (
    Account,
    Payment,
    PaymentStatus,
    charge,
    decline,
    idempotency_key,
    refund,
)


def funded(balance: int, customer_id: str = "c1") -> Account:
    account = Account(customer_id)
    account.deposit(balance)
    return account


def pay(account: Account, amount: int, *, existing=None, cancelled=False, order_id="o1"):
    return charge(account, order_id, "p1", amount, existing, cancelled)


def test_a_deposit_raises_balance_and_deposited():
    account = funded(500)
    account.deposit(250)
    assert account == Account("c1", balance=750, deposited=750)


def test_a_balance_that_exactly_covers_the_total_is_captured():
    account = funded(1000)
    payment = pay(account, 1000)
    assert payment == Payment("o1", "p1", "c1", 1000, PaymentStatus.CAPTURED)
    assert account == Account("c1", balance=0, deposited=1000, captured=1000)


def test_one_cent_short_is_declined_and_moves_no_money():
    account = funded(999)
    payment = pay(account, 1000)
    assert payment == Payment("o1", "p1", "c1", 1000, PaymentStatus.DECLINED)
    assert account == funded(999)


def test_an_unknown_customer_has_nothing_to_spend():
    assert pay(Account("nobody"), 1) == Payment("o1", "p1", "nobody", 1, PaymentStatus.DECLINED)
    assert pay(Account("nobody"), 0) == Payment("o1", "p1", "nobody", 0, PaymentStatus.CAPTURED)


@pytest.mark.parametrize("status", list(PaymentStatus))
def test_an_order_with_a_payment_is_never_charged_again(status):
    account = funded(5000)
    existing = Payment("o1", "p0", "c1", 100, status)
    assert pay(account, 100, existing=existing) is None
    assert account == funded(5000)


def test_a_cancelled_order_is_not_charged_even_with_funds():
    account = funded(5000)
    assert pay(account, 100, cancelled=True) is None
    assert account == funded(5000)


def test_a_capture_is_refunded_once():
    account = funded(300)
    payment = pay(account, 200)
    assert payment is not None
    assert refund(account, payment) is True
    assert payment.status is PaymentStatus.REFUNDED
    assert account == Account("c1", balance=300, deposited=300, captured=200, refunded=200)
    assert refund(account, payment) is False
    assert account == Account("c1", balance=300, deposited=300, captured=200, refunded=200)


def test_a_declined_payment_has_nothing_to_refund():
    account = funded(10)
    payment = pay(account, 200)
    assert payment is not None
    assert refund(account, payment) is False
    assert payment.status is PaymentStatus.DECLINED
    assert account == funded(10)


def test_a_refund_goes_to_the_payer_only():
    payment = Payment("o1", "p1", "c1", 100, PaymentStatus.CAPTURED)
    with pytest.raises(ValueError):
        refund(funded(0, "c2"), payment)


def test_negative_amounts_are_refused():
    with pytest.raises(ValueError):
        Account("c1").deposit(-1)
    with pytest.raises(ValueError):
        pay(funded(100), -1)


CUSTOMERS = ("c1", "c2")
amounts = st.integers(min_value=0, max_value=1500)


class MoneyBooks(RuleBasedStateMachine):
    """Random deposits, charges (some cancelled first), repeats and refunds."""

    @initialize()
    def empty(self) -> None:
        self.accounts = {c: Account(c) for c in CUSTOMERS}
        self.payments: dict[str, Payment] = {}
        self.orders = 0

    @rule(customer=st.sampled_from(CUSTOMERS), amount=amounts)
    def deposit(self, customer: str, amount: int) -> None:
        self.accounts[customer].deposit(amount)

    @rule(customer=st.sampled_from(CUSTOMERS), amount=amounts, cancelled=st.booleans())
    def order(self, customer: str, amount: int, cancelled: bool) -> None:
        self.orders += 1
        order_id = f"o{self.orders}"
        account = self.accounts[customer]
        before = copy.deepcopy(account)
        payment = charge(account, order_id, f"p{self.orders}", amount, None, cancelled)
        if cancelled:
            assert payment is None and account == before
            return
        assert payment is not None
        expected = PaymentStatus.CAPTURED if before.balance >= amount else PaymentStatus.DECLINED
        assert payment.status is expected
        self.payments[order_id] = payment

    @precondition(lambda self: self.payments)
    @rule(pick=st.integers(min_value=0))
    def charge_again(self, pick: int) -> None:
        payment = list(self.payments.values())[pick % len(self.payments)]
        account = self.accounts[payment.customer_id]
        before = copy.deepcopy(account)
        assert charge(account, payment.order_id, "again", payment.amount, payment, False) is None
        assert account == before

    @precondition(lambda self: self.payments)
    @rule(pick=st.integers(min_value=0))
    def refund_a_payment(self, pick: int) -> None:
        payment = list(self.payments.values())[pick % len(self.payments)]
        account = self.accounts[payment.customer_id]
        was_captured = payment.status is PaymentStatus.CAPTURED
        before = copy.deepcopy(account)
        assert refund(account, payment) is was_captured
        if not was_captured:
            assert account == before  # refunding twice is a no-op

    @invariant()
    def books_balance(self) -> None:
        for a in self.accounts.values():
            assert a.balance + a.captured - a.refunded == a.deposited
            assert a.balance >= 0

    @invariant()
    def net_captured_is_what_captured_payments_hold(self) -> None:
        for a in self.accounts.values():
            held = sum(
                p.amount
                for p in self.payments.values()
                if p.customer_id == a.customer_id and p.status is PaymentStatus.CAPTURED
            )
            assert a.captured - a.refunded == held


MoneyBooks.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestMoneyBooks = MoneyBooks.TestCase


def test_a_decline_by_the_provider_gives_the_books_back_the_amount():
    account = funded(1_000)
    captured = pay(account, 400)
    assert captured is not None and captured.status is PaymentStatus.CAPTURED
    declined = decline(account, captured)
    assert declined.status is PaymentStatus.DECLINED
    assert (declined.order_id, declined.amount) == ("o1", 400)
    assert account == Account("c1", balance=1_000, deposited=1_000)
    with pytest.raises(ValueError):
        decline(account, declined)  # only a capture the books allowed can be declined


def test_idempotency_keys_are_a_function_of_operation_and_order():
    assert idempotency_key("capture", "o1") == idempotency_key("capture", "o1")
    keys = {idempotency_key(op, order) for op in ("authorise", "capture") for order in "ab"}
    assert len(keys) == 4
    # Fixed for good: a redelivered event after an upgrade must re-send its first key.
    assert idempotency_key("capture", "o1") == "48d314e6-a2c5-5ce3-84bc-fed42bc7ad7b"
