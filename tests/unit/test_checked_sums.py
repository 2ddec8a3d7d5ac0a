"""Sums that would pass what a 64-bit column stores are refused with a reason, in every
service that keeps one (issue 14): the owners refuse the request, the read models the event."""

from __future__ import annotations

import pytest

from services.analytics.domain import Fact, Kind, WindowOverflow, WindowStats
from services.inventory.domain import Refused as StockRefused
from services.inventory.domain import StockLevel
from services.orders.domain import TotalTooLarge, order_total
from services.payments.domain import Account
from services.payments.domain import Refused as PaymentRefused
from services.query.figures import (
    Customer,
    FigureOverflow,
    Money,
    Sku,
    Stock,
    apply_money,
    apply_stock,
)

MAX = 2**63 - 1


def test_payments_refuses_a_deposit_past_the_64_bit_range_and_keeps_the_books() -> None:
    account = Account("ada")
    account.deposit(MAX)
    with pytest.raises(PaymentRefused, match="would pass"):
        account.deposit(1)
    assert (account.balance, account.deposited) == (MAX, MAX)


def test_payments_refuses_a_negative_deposit() -> None:
    with pytest.raises(PaymentRefused, match="negative"):
        Account("ada").deposit(-5)


def test_inventory_refuses_a_restock_past_the_64_bit_range_and_keeps_the_count() -> None:
    level = StockLevel("sku", on_hand=MAX - 10, received=MAX - 10)
    with pytest.raises(StockRefused, match="would pass"):
        level.restock(11)
    level.restock(10)
    assert (level.on_hand, level.received) == (MAX, MAX)


def test_order_total_past_the_64_bit_range_is_refused() -> None:
    assert order_total([(2, 3), (1, MAX - 6)]) == MAX
    with pytest.raises(TotalTooLarge):
        order_total([(2**31 - 1, MAX // 2**30)])


def test_query_customer_figures_past_the_64_bit_range_are_refused() -> None:
    full = apply_money(Customer("ada"), Money(deposited=MAX))
    with pytest.raises(FigureOverflow, match="customer ada: deposited"):
        apply_money(full, Money(deposited=1))


def test_query_sku_figures_past_the_64_bit_range_are_refused() -> None:
    full = apply_stock(Sku("s"), Stock(received=MAX))
    with pytest.raises(FigureOverflow, match="SKU s: received"):
        apply_stock(full, Stock(received=1))


def test_analytics_window_refuses_an_amount_past_the_64_bit_range_unchanged() -> None:
    stats = WindowStats()
    stats.add(Fact(Kind.CAPTURED, amount_cents=MAX))
    with pytest.raises(WindowOverflow):
        stats.add(Fact(Kind.CAPTURED, amount_cents=1))
    assert stats.captured_cents == MAX
    merged = WindowStats()
    merged.merge(stats)
    merged.merge(stats)  # parts of one window: shown saturated, never an error
    assert merged.captured_cents == MAX
