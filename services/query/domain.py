"""The read models' rules: how saga facts build an order's view, and what an order adds to
its customer's money and its SKUs' stock. Standard library only.

Events of one order on one topic arrive in order (they share a key, so a partition), but
events on different topics interleave differently on every replay. So an order's view is a
*join* of partial views, one per event, and every field joins commutatively, associatively
and idempotently (``RULES``): a value set once (all events that carry it agree; if two ever
disagreed, the smaller wins), a status that only climbs its ranks, the latest time. The rows
are then a function of the set of events alone, whatever the order they were read in, and a
duplicate delivery changes nothing.

Customer and SKU figures are sums of what each order contributes *now* (its captured and
refunded amounts, its reserved or shipped lines) plus deposits and restocks counted once per
id; a batch adds ``contribution(after) - contribution(before)`` per changed order, so they are
just as independent of order and duplicates.

Times are ISO-8601 strings in UTC with microseconds (``2025-01-01T00:00:00.000000+00:00``):
fixed width, so comparing the strings compares the times.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

PENDING: Final = "PENDING"
ORDER_STATUSES: Final = ("PENDING", "COMPLETED", "REJECTED", "CANCELLED")

# A status moves only up its ranks; two statuses of one rank exclude each other (an order's
# payment is captured or declined, never both) and the smaller name wins if both were seen.
PAYMENT_RANKS: Final = {"CAPTURED": 1, "DECLINED": 1, "REFUNDED": 2}
SHIPMENT_RANKS: Final = {"SCHEDULED": 1, "FAILED": 1, "CANCELLED": 2}
# Inventory ships a reservation on OrderCompleted and releases it on a compensation, each
# only while it is RESERVED, and emits StockReleased only when it did release. So a
# StockReleased outranks a completion: had inventory shipped first, it would not have
# released (and would have said nothing).
STOCK_RANKS: Final = {"RESERVED": 1, "REJECTED": 1, "SHIPPED": 2, "RELEASED": 3}

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


Lines = tuple[tuple[str, int], ...]  # (sku, quantity) as inventory reserved them
View = dict[str, Any]  # field -> value; a field not present is not known yet


def iso(moment: datetime) -> str:
    """A time as the read models keep it: UTC, microseconds, fixed width."""
    if moment.tzinfo is UTC:
        # Every event time arrives in UTC; isoformat() without a timespec costs two thirds
        # of one with it, and omits only a zero fraction.
        text = moment.isoformat()
        return text if moment.microsecond else f"{text[:19]}.000000{text[19:]}"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # the envelope's times are UTC when naive
    elif moment.utcoffset():
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds")


class Created(NamedTuple):
    created_at: str
    total_cents: int
    lines: str  # JSON list of {sku, quantity, unit_price_cents}, as OrderCreated carried it


class Terminal(NamedTuple):
    """The order's end as orders decided it (OrderCompleted, OrderRejected, OrderCancelled)."""

    at: str
    event_id: str
    status: str
    reason: str | None = None
    failed_step: str | None = None


class Stuck(NamedTuple):
    """What orders reported when the saga passed its deadline (OrderStuck)."""

    detected_at: str
    event_id: str
    waiting_on: str  # inventory, payments or shipping
    waiting_since: str
    deadline_at: str


# The order-view field that shows a step answered: once it is known, the order no longer
# waits on that step (orders reports it again if it is stuck at the next one).
ANSWERED_BY: Final = {
    "inventory": "stock_status",
    "payments": "payment_status",
    "shipping": "shipment_status",
}


def _smaller(a: Any, b: Any) -> Any:
    return a if a <= b else b


def _later(a: str, b: str) -> str:
    return a if a >= b else b


def _latest(a: Any, b: Any) -> Any:
    return a if a >= b else b


def _first_event(a: Terminal, b: Terminal) -> Terminal:
    # orders emits one terminal event per order; should there ever be two, the earlier (by
    # its own time, then event id) is the one shown, on every replay alike. The rest of the
    # key only makes the choice total (None sorts first).
    return a if _terminal_key(a) <= _terminal_key(b) else b


def _terminal_key(t: Terminal) -> tuple[str, str, str, bool, str, bool, str]:
    reason, step = t.reason, t.failed_step
    return (
        t.at,
        t.event_id,
        t.status,
        reason is not None,
        reason or "",
        step is not None,
        step or "",
    )


def _climb(ranks: Mapping[str, int]) -> Callable[[str, str], str]:
    def climb(a: str, b: str) -> str:
        ra, rb = ranks.get(a, 0), ranks.get(b, 0)
        if ra != rb:
            return a if ra > rb else b
        return a if a <= b else b

    return climb


RULES: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "updated_at": _later,  # the latest occurred_at among the order's events
    "customer_id": _smaller,
    "created": _smaller,  # Created: one OrderCreated per order
    "terminal": _first_event,
    # orders reports an order once per step it is stuck at: the latest report (by its own
    # time, then event id) says where it is stuck now.
    "stuck": _latest,
    "payment_id": _smaller,
    "payment_status": _climb(PAYMENT_RANKS),
    "captured_cents": _smaller,
    "refunded_cents": _smaller,
    "payment_reason": _smaller,
    "shipment_id": _smaller,
    "shipment_status": _climb(SHIPMENT_RANKS),
    "carrier": _smaller,
    "shipment_reason": _smaller,
    "stock_status": _climb(STOCK_RANKS),
    "stock_lines": _smaller,
    "stock_reason": _smaller,
    "notified_at": _smaller,
}


def join(a: Mapping[str, Any] | None, b: Mapping[str, Any]) -> View:
    """What both partial views say. Commutative, associative and idempotent (per RULES)."""
    out = dict(a) if a else {}
    for name, value in b.items():
        if value is None:
            continue
        old = out.get(name)
        out[name] = value if old is None else RULES[name](old, value)
    return out


def join_into(views: dict[str, View], order_id: str, patch: Mapping[str, Any]) -> None:
    """``views[order_id] = join(views.get(order_id), patch)``, without copying."""
    view = views.get(order_id)
    if view is None:
        views[order_id] = {k: v for k, v in patch.items() if v is not None}
        return
    for name, value in patch.items():
        if value is None:
            continue
        old = view.get(name)
        view[name] = value if old is None else RULES[name](old, value)


def status(view: Mapping[str, Any]) -> str | None:
    """None until OrderCreated is seen; then the terminal status, or PENDING."""
    if view.get("created") is None:
        return None
    terminal: Terminal | None = view.get("terminal")
    return terminal.status if terminal is not None else PENDING


def stuck_now(view: Mapping[str, Any]) -> Stuck | None:
    """The stuck report that still holds: the order is pending and has not got past the step
    it was reported stuck at. A function of the joined view, so of the set of events only."""
    stuck: Stuck | None = view.get("stuck")
    if stuck is None or status(view) != PENDING:
        return None
    answered = ANSWERED_BY.get(stuck.waiting_on)
    if answered is not None and view.get(answered) is not None:
        return None
    return stuck


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
        as_of = money_at if as_of is None else _later(as_of, money_at)
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
