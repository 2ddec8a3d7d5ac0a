"""What an order adds to its customer's money and its SKUs' stock, and the customer and
SKU figures they sum to. Standard library only (the order's view is ``domain``'s).

Customer and SKU figures are sums of what each order contributes *now* (its captured and
refunded amounts, its reserved or shipped lines) plus deposits and restocks counted once per
id; a batch adds ``contribution(after) - contribution(before)`` per changed order, so they are
as independent of the order of events and of duplicates as the views they are counted from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, NamedTuple

from services.query.domain import Lines, View, join, later

# What a BIGINT column (and SQLite's INTEGER) stores: a figure past it is refused here, with
# a reason, instead of failing in the driver (the projection dead-letters the event).
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1


class FigureOverflow(ValueError):
    """A customer or SKU figure an event would push past what the tables store."""


def checked(owner: str, name: str, value: int) -> int:
    if not INT64_MIN <= value <= INT64_MAX:
        raise FigureOverflow(f"{owner}: {name} would be {value}, past the 64-bit range")
    return value


# --- what an order contributes to its customer and its SKUs --------------------------------


@dataclass(slots=True)
class Money:
    orders: int = 0
    captured: int = 0
    refunded: int = 0
    deposited: int = 0

    def add(self, other: Money, sign: int = 1) -> None:
        self.orders += sign * other.orders
        self.captured += sign * other.captured
        self.refunded += sign * other.refunded
        self.deposited += sign * other.deposited

    def __bool__(self) -> bool:
        return any((self.orders, self.captured, self.refunded, self.deposited))


@dataclass(slots=True)
class Stock:
    received: int = 0
    reserved: int = 0
    shipped: int = 0

    def add(self, other: Stock, sign: int = 1) -> None:
        self.received += sign * other.received
        self.reserved += sign * other.reserved
        self.shipped += sign * other.shipped

    def __bool__(self) -> bool:
        return any((self.received, self.reserved, self.shipped))


def money_of(view: Mapping[str, Any] | None) -> tuple[str, Money] | None:
    """The order's part of its customer's figures: counted once created, captured, refunded."""
    if not view or view.get("customer_id") is None:
        return None
    money = Money()
    _count_money(money, view, 1)
    return view["customer_id"], money


def stock_of(view: Mapping[str, Any] | None) -> dict[str, Stock]:
    """The order's part of each SKU, mirroring inventory: held while RESERVED, out once
    SHIPPED, back on hand (so nothing) once RELEASED."""
    out: dict[str, Stock] = {}
    if view is not None:
        _count_stock(out, view, 1)
    return out


def _count_money(money: Money, view: Mapping[str, Any], sign: int) -> None:
    if view.get("created") is not None:
        money.orders += sign
    money.captured += sign * (view.get("captured_cents") or 0)
    money.refunded += sign * (view.get("refunded_cents") or 0)


def _count_stock(out: dict[str, Stock], view: Mapping[str, Any], sign: int) -> None:
    lines: Lines | None = view.get("stock_lines")
    if lines is None:
        return
    state = view.get("stock_status")
    for sku, quantity in lines:
        part = out.get(sku)
        if part is None:
            part = out[sku] = Stock()
        if state == "RESERVED":
            part.reserved += sign * quantity
        elif state == "SHIPPED":
            part.shipped += sign * quantity


_MONEY_FIELDS = ("customer_id", "created", "captured_cents", "refunded_cents")
_STOCK_FIELDS = ("stock_status", "stock_lines")


def money_changes(
    before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]]
) -> dict[str, Money]:
    """Per customer: what the changed orders add (or take back). Counted in place (no
    figures per order): a replay's flush counts every order it rebuilt."""
    out: dict[str, Money] = {}
    for order_id, view in after.items():
        old = before.get(order_id)
        if old:
            if all(old.get(k) == view.get(k) for k in _MONEY_FIELDS):
                continue  # most changes (stock, shipment, times) move no money
            if (customer := old.get("customer_id")) is not None:
                _count_money(out.setdefault(customer, Money()), old, -1)
        if (customer := view.get("customer_id")) is not None:
            _count_money(out.setdefault(customer, Money()), view, 1)
    return {c: m for c, m in out.items() if m}


def stock_changes(
    before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]]
) -> dict[str, Stock]:
    """Per SKU: what the changed orders hold or shipped, minus what they did before."""
    out: dict[str, Stock] = {}
    for order_id, view in after.items():
        old = before.get(order_id)
        if old:
            if all(old.get(k) == view.get(k) for k in _STOCK_FIELDS):
                continue
            _count_stock(out, old, -1)
        _count_stock(out, view, 1)
    return {s: d for s, d in out.items() if d}


# --- customers ------------------------------------------------------------------------------


class Decline(NamedTuple):
    """The balance payments reported when it declined an order (PaymentDeclined)."""

    at: str
    event_id: str
    balance_cents: int


def later_decline(a: Decline | None, b: Decline | None) -> Decline | None:
    if a is None or b is None:
        return a or b
    return a if a >= b else b  # by time, then event id (then balance: a total order)


@dataclass(frozen=True, slots=True)
class Customer:
    """A customer's figures.

    ``balance_cents`` is the balance *as last seen*: payments' own invariant
    ``balance = deposited - captured + refunded`` over every deposit, capture and refund the
    projection has applied, and ``balance_as_of`` is the latest time among those events (their
    ``credited_at``, ``captured_at``, ``refunded_at``: payments' facts, so a deposit payments
    refused counts nowhere). Once the projection has caught up it equals payments' balance
    exactly. PaymentDeclined moves no money; the balance it reports is kept as
    ``last_decline`` (the latest by ``declined_at``, then event id), payments' own snapshot
    to compare with. It is not folded into the balance: facts on different partitions
    interleave, so no event says which credits that snapshot counted.
    """

    customer_id: str
    orders_count: int = 0
    deposited_cents: int = 0
    captured_cents: int = 0
    refunded_cents: int = 0
    balance_as_of: str | None = None
    last_decline: Decline | None = None

    @property
    def balance_cents(self) -> int:
        return self.deposited_cents - self.captured_cents + self.refunded_cents


def apply_money(
    customer: Customer,
    change: Money | None = None,
    money_at: str | None = None,
    decline: Decline | None = None,
) -> Customer:
    change = change or Money()
    as_of = customer.balance_as_of
    if money_at is not None:
        as_of = money_at if as_of is None else later(as_of, money_at)
    who = f"customer {customer.customer_id}"
    new = replace(
        customer,
        orders_count=checked(who, "orders", customer.orders_count + change.orders),
        deposited_cents=checked(who, "deposited", customer.deposited_cents + change.deposited),
        captured_cents=checked(who, "captured", customer.captured_cents + change.captured),
        refunded_cents=checked(who, "refunded", customer.refunded_cents + change.refunded),
        balance_as_of=as_of,
        last_decline=later_decline(customer.last_decline, decline),
    )
    checked(who, "balance", new.balance_cents)  # shown by the API, so it must fit too
    return new


# --- SKUs -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sku:
    """Stock per SKU as inventory keeps it: ``on_hand + reserved == received - shipped``."""

    sku: str
    received: int = 0
    reserved: int = 0
    shipped: int = 0

    @property
    def on_hand(self) -> int:
        return self.received - self.reserved - self.shipped


def apply_stock(sku: Sku, change: Stock) -> Sku:
    who = f"SKU {sku.sku}"
    new = replace(
        sku,
        received=checked(who, "received", sku.received + change.received),
        reserved=checked(who, "reserved", sku.reserved + change.reserved),
        shipped=checked(who, "shipped", sku.shipped + change.shipped),
    )
    checked(who, "on hand", new.on_hand)
    return new


@dataclass
class Folded:
    """A batch's effect: the order views it changed and what they add per customer and SKU."""

    changed: dict[str, View]
    money: dict[str, Money]
    stock: dict[str, Stock]


def fold(before: Mapping[str, View], patches: Mapping[str, View]) -> Folded:
    """Joins a batch's patches (one joined patch per order) into the stored views."""
    after: dict[str, View] = {}
    for order_id, patch in patches.items():
        old = before.get(order_id)
        new = join(old, patch)
        if new != old:
            after[order_id] = new
    return Folded(after, money_changes(before, after), stock_changes(before, after))
