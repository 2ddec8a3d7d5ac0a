"""The read models' rules for an order's view: how saga facts build it. Standard library
only; what an order adds to its customer's money and its SKUs' stock is ``figures``.

Events of one order on one topic arrive in order (they share a key, so a partition), but
events on different topics interleave differently on every replay. So an order's view is a
*join* of partial views, one per event, and every field joins commutatively, associatively
and idempotently (``RULES``): a value set once (all events that carry it agree; if two ever
disagreed, the smaller wins), a status that only climbs its ranks, the latest time. The rows
are then a function of the set of events alone, whatever the order they were read in, and a
duplicate delivery changes nothing.

Times are ISO-8601 strings in UTC with microseconds (``2025-01-01T00:00:00.000000+00:00``):
fixed width, so comparing the strings compares the times.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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


def later(a: str, b: str) -> str:
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
    "updated_at": later,  # the latest occurred_at among the order's events
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
