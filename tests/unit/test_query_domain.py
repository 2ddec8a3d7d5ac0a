"""The query projection's rules, without I/O: joins, contributions, balances, and the whole
batch logic run against an in-memory store (the SQL store runs it in the integration tests).
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events.catalogue import Catalogue
from events.codec import AvroCodec
from events.envelope import Envelope, Event
from events.reading import NotCoPartitioned
from schemas.models import ALL_EVENTS
from services.query import collect as query_collect
from services.query.collect import Batch, KeptOrders, collect
from services.query.domain import (
    PENDING,
    RULES,
    Created,
    Stuck,
    Terminal,
    iso,
    join,
    status,
    stuck_now,
)
from services.query.figures import Customer, Decline, Money, apply_money, fold, stock_of
from services.query.rows import (
    customer_from_row,
    customer_row,
    lines_json,
    order_row,
    order_view,
    sku_from_row,
    sku_row,
)
from services.query.tables import CUSTOMERS, ORDERS, SKUS, define_tables
from tests.integration.test_query_kit import PATHS, Saga

CODEC = AvroCodec(Catalogue.load())
TOPIC = {
    "orders": "orders.events",
    "inventory": "inventory.events",
    "payments": "payments.events",
    "shipping": "shipping.events",
    "notifications": "notifications.events",
    "warehouse": "inventory.requests",
    "bank": "payments.requests",
}


# --- the saga as events, and the batch logic over an in-memory store ------------------------


def events_of(saga: Saga) -> list[Event[Any]]:
    out = []
    for offset, sent in enumerate(saga.sent):
        d = sent.draft
        env = Envelope(
            event_id=sent.event_id,
            event_type=d.event_type,
            schema_version=1,
            occurred_at=d.occurred_at,
            producer=sent.producer,
            correlation_id=d.correlation_id or sent.event_id,
            key=d.key,
            causation_id=d.causation_id,
        )
        model = ALL_EVENTS[d.event_type].model_validate(d.payload)
        # The projection takes payloads as the codec decodes them (no model).
        payload = CODEC.decode(CODEC.encode(d.event_type, model.to_avro())).payload
        out.append(Event(env, payload, TOPIC[sent.producer], 0, offset))
    return out


class MemoryStore:
    """The Store port over dicts of rows (through the same row conversions as the SQL one)."""

    def __init__(self) -> None:
        self.order_rows: dict[str, tuple] = {}
        self.timeline: dict[tuple[str, str], tuple] = {}
        self.deposit_ids: set[str] = set()
        self.restock_ids: set[str] = set()
        self.customer_rows: dict[str, tuple] = {}
        self.sku_rows: dict[str, tuple] = {}
        self.owners: dict[str, int] = {}

    def join_orders(self, patches):
        return fold(
            {k: order_view(self.order_rows[k]) for k in patches if k in self.order_rows}, patches
        )

    def customers(self, keys):
        return {
            k: customer_from_row(self.customer_rows[k]) for k in keys if k in self.customer_rows
        }

    def skus(self, keys):
        return {k: sku_from_row(self.sku_rows[k]) for k in keys if k in self.sku_rows}

    def deposits_seen(self, keys):
        return set(keys) & self.deposit_ids

    def restocks_seen(self, keys):
        return set(keys) & self.restock_ids

    def claim(self, reader, order_ids):
        for order_id in order_ids:
            if self.owners.setdefault(order_id, reader) != reader:
                raise NotCoPartitioned(order_id)

    def save(self, changes):
        self.order_rows.update({k: order_row(k, v) for k, v in changes.orders.items()})
        assert isinstance(changes.rows, list), "no hand-over files without a scratch directory"
        self.order_rows.update({row[0]: row for row in changes.rows})
        for row in changes.timeline:
            self.timeline.setdefault((row[0], row[1]), row)
        self.deposit_ids.update(d[0] for d in changes.deposits)
        self.restock_ids.update(r[0] for r in changes.restocks)
        self.customer_rows.update({c.customer_id: customer_row(c) for c in changes.customers})
        self.sku_rows.update({s.sku: sku_row(s) for s in changes.skus})

    def snapshot(self) -> dict[str, Any]:
        return {
            "orders": self.order_rows,
            "timeline": {k: v[:8] for k, v in self.timeline.items()},  # not where it was read
            "customers": self.customer_rows,
            "skus": self.sku_rows,
        }


def apply(events: list[Event[Any]], batch_sizes: list[int]) -> MemoryStore:
    store = MemoryStore()
    i = 0
    sizes = iter(batch_sizes)
    while i < len(events):
        size = max(1, next(sizes, len(events)))
        batch = Batch()
        for event in events[i : i + size]:
            collect(batch, event)
        batch.write_to(store)
        i += size
    return store


def saga_with_every_path(seed: int = 1, stuck: bool = False) -> Saga:
    """Orders down every path; with ``stuck``, some reported stuck on the way and two still
    stuck (pending)."""
    saga = Saga(run="unit")
    rng = random.Random(seed)
    sku_a, sku_b = saga.sku("a"), saga.sku("b")
    saga.restock(sku_a, 50)
    saga.restock(sku_b, 50)
    for name in ("ada", "bo"):
        saga.deposit(saga.customer(name), 100_000)
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    for i, path in enumerate(PATHS * 2):
        lines = [(sku_a, rng.randint(1, 3), 100)] + ([(sku_b, 1, 250)] if i % 2 else [])
        order = saga.order(
            path, saga.customer("ada" if i % 3 else "bo"), lines, at=t0 + timedelta(seconds=i)
        )
        if stuck and i % 3 == 0:  # reported stuck on the way, then it went on and ended
            saga.stuck(order, "payments", t0 + timedelta(seconds=i, milliseconds=1500))
    if not stuck:
        return saga
    # Still under way: stuck at shipping (reported twice, at two steps), and at inventory.
    held = saga.cut(saga.order("success", saga.customer("ada"), [(sku_a, 1, 100)], at=t0), 3)
    saga.stuck(held, "payments", t0 + timedelta(minutes=5))
    saga.stuck(held, "shipping", t0 + timedelta(minutes=6))
    waiting = saga.cut(saga.order("success", saga.customer("bo"), [(sku_b, 1, 100)], at=t0), 1)
    saga.stuck(waiting, "inventory", t0 + timedelta(minutes=5))
    return saga


# --- properties ---------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_rows_depend_on_the_set_of_events_not_on_order_batches_or_duplicates(data):
    events = events_of(saga_with_every_path(stuck=True))
    expected = apply(events, [len(events)]).snapshot()
    shuffled = data.draw(st.permutations(events))
    repeats = data.draw(st.lists(st.sampled_from(events), max_size=15))
    mixed = list(shuffled)
    for e in repeats:  # re-deliveries (a relay re-publishing after a crash)
        mixed.insert(data.draw(st.integers(0, len(mixed))), e)
    sizes = data.draw(st.lists(st.integers(1, 40), min_size=1, max_size=30))
    assert apply(mixed, sizes).snapshot() == expected


def apply_in_readers(events: list[Event[Any]], readers: int, owner, sizes) -> MemoryStore:
    """As a replay whose readers keep their orders writes: every reader's batches
    interleaved, then what each kept."""
    shares: list[list[Event[Any]]] = [[] for _ in range(readers)]
    for event in events:
        shares[owner(event) % readers].append(event)
    collectors = [KeptOrders(i) for i in range(readers)]
    queues = []
    for collector, share in zip(collectors, shares, strict=True):
        batches, i = [], 0
        while i < len(share):
            size = max(1, next(sizes, len(share)))
            batches.append(collector(share[i : i + size]))
            i += size
        queues.append(batches)
    store = MemoryStore()
    while any(queues):
        for batches in queues:
            if batches:
                batches.pop(0).write_to(store)
    for collector in collectors:
        if (rest := collector.rest()) is not None:
            rest.write_to(store)
    return store


def _by_order(event: Event[Any]) -> int:
    p = event.payload
    return sum(map(ord, p.get("order_id") or p.get("deposit_id") or p["restock_id"]))


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_readers_that_keep_their_orders_write_the_rows_one_process_does(data):
    events = events_of(saga_with_every_path(stuck=True))
    expected = apply(events, [len(events)]).snapshot()
    readers = data.draw(st.integers(1, 3))
    sizes = iter(data.draw(st.lists(st.integers(1, 40), min_size=1, max_size=30)))
    assert apply_in_readers(events, readers, _by_order, sizes).snapshot() == expected


def test_a_reader_past_its_limit_of_kept_orders_hands_them_on_as_partial_views(
    monkeypatch: pytest.MonkeyPatch,
):
    events = events_of(saga_with_every_path(stuck=True))
    expected = apply(events, [len(events)]).snapshot()
    monkeypatch.setattr(query_collect, "KEPT_ORDERS_LIMIT", 3)
    store = apply_in_readers(events, 2, _by_order, iter([4, 9, 2, 7] * 50))
    assert store.snapshot() == expected


def test_an_order_read_by_two_readers_that_keep_orders_is_refused():
    events = events_of(saga_with_every_path())
    alternate = iter(range(len(events)))
    with pytest.raises(NotCoPartitioned):
        apply_in_readers(events, 2, lambda _: next(alternate), iter([5]))


def test_the_store_matches_what_the_saga_did():
    saga = saga_with_every_path()
    store = apply(events_of(saga), [7])
    statuses = {k: r[2] for k, r in store.order_rows.items()}
    for order in saga.orders.values():
        want = {
            "success": "COMPLETED",
            "out of stock": "REJECTED",
            "insufficient funds": "CANCELLED",
            "unserviceable address": "CANCELLED",
            "cancelled": "CANCELLED",
        }[order.path]
        assert statuses[order.order_id] == want
    # Per SKU, inventory's invariant: on hand + reserved == received - shipped, and shipped is
    # what the completed orders took.
    shipped: dict[str, int] = {}
    for order in saga.orders.values():
        if order.path == "success":
            for line in order.lines:
                shipped[line["sku"]] = shipped.get(line["sku"], 0) + line["quantity"]
    for sku, received, reserved, done, on_hand in store.sku_rows.values():
        assert received == 50 and reserved == 0 and done == shipped[sku]
        assert on_hand + reserved == received - done
    # Per customer, payments' invariant: balance + captured - refunded == deposited.
    for row in store.customer_rows.values():
        c = customer_from_row(row)
        assert c.balance_cents + c.captured_cents - c.refunded_cents == c.deposited_cents
    assert len(store.timeline) == sum(len(o.events) for o in saga.orders.values())


# --- joins ----------------------------------------------------------------------------------------

times = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
).map(iso)
small = st.sampled_from(["a", "b", "c"])
VALUES: dict[str, Any] = {
    "updated_at": times,
    "customer_id": small,
    "created": st.builds(Created, times, st.integers(0, 9), small),
    "terminal": st.builds(
        Terminal,
        times,
        small,
        st.sampled_from(["COMPLETED", "REJECTED", "CANCELLED"]),
        st.none() | small,
        st.none() | small,
    ),
    "payment_id": small,
    "payment_status": st.sampled_from(["CAPTURED", "DECLINED", "REFUNDED"]),
    "captured_cents": st.integers(0, 9),
    "refunded_cents": st.integers(0, 9),
    "payment_reason": small,
    "shipment_id": small,
    "shipment_status": st.sampled_from(["SCHEDULED", "FAILED", "CANCELLED"]),
    "carrier": small,
    "shipment_reason": small,
    "stock_status": st.sampled_from(["RESERVED", "REJECTED", "SHIPPED", "RELEASED"]),
    "stock_lines": st.lists(st.tuples(small, st.integers(1, 3)), min_size=1, max_size=2).map(tuple),
    "stock_reason": small,
    "notified_at": times,
    "stuck": st.builds(
        Stuck, times, small, st.sampled_from(["inventory", "payments", "shipping"]), times, times
    ),
}
assert set(VALUES) == set(RULES)
patches = st.fixed_dictionaries(
    {"updated_at": times}, optional={k: v for k, v in VALUES.items() if k != "updated_at"}
)


@given(patches, patches, patches)
def test_join_is_commutative_associative_and_idempotent(a, b, c):
    assert join(a, b) == join(b, a)
    assert join(join(a, b), c) == join(a, join(b, c))
    assert join(a, a) == a
    assert join(join(a, b), b) == join(a, b)


def test_statuses_only_climb():
    assert (
        join({"stock_status": "SHIPPED"}, {"stock_status": "RESERVED"})["stock_status"] == "SHIPPED"
    )
    assert (
        join({"stock_status": "SHIPPED"}, {"stock_status": "RELEASED"})["stock_status"]
        == "RELEASED"
    )
    assert (
        join({"payment_status": "REFUNDED"}, {"payment_status": "CAPTURED"})["payment_status"]
        == "REFUNDED"
    )
    assert (
        join({"shipment_status": "CANCELLED"}, {"shipment_status": "SCHEDULED"})["shipment_status"]
        == "CANCELLED"
    )


def test_the_first_terminal_event_wins_on_every_replay():
    early = Terminal("2025-01-01T00:00:00.000000+00:00", "b", "CANCELLED", "r", None)
    late = Terminal("2025-01-02T00:00:00.000000+00:00", "a", "COMPLETED")
    assert join({"terminal": late}, {"terminal": early})["terminal"] == early
    assert join({"terminal": early}, {"terminal": late})["terminal"] == early


def test_status_is_pending_until_terminal_and_unknown_until_created():
    created = Created("2025-01-01T00:00:00.000000+00:00", 1, "[]")
    assert status({}) is None
    assert status({"terminal": Terminal("t", "e", "COMPLETED")}) is None
    assert status({"created": created}) == PENDING
    assert status({"created": created, "terminal": Terminal("t", "e", "REJECTED")}) == "REJECTED"


@pytest.mark.parametrize(
    ("state", "reserved", "shipped"),
    [("RESERVED", 3, 0), ("SHIPPED", 0, 3), ("RELEASED", 0, 0), ("REJECTED", 0, 0)],
)
def test_what_an_order_holds_of_a_sku_mirrors_inventory(state, reserved, shipped):
    part = stock_of({"stock_status": state, "stock_lines": (("w", 1), ("w", 2))})["w"]
    assert (part.reserved, part.shipped) == (reserved, shipped)
    assert stock_of({"stock_status": "SHIPPED"}) == {}  # completed before the reservation is seen


def test_fold_reports_only_changes():
    view = {"updated_at": "t", "customer_id": "c", "captured_cents": 5}
    folded = fold({"o": view}, {"o": {"updated_at": "t", "captured_cents": 5}})
    assert folded.changed == {} and folded.money == {} and folded.stock == {}
    folded = fold({}, {"o": view})
    assert folded.money["c"] == Money(orders=0, captured=5)


def test_the_stuck_orders_are_those_still_waiting_where_reported():
    store = apply(events_of(saga_with_every_path(stuck=True)), [5])
    stuck = {r[0]: r for r in store.order_rows.values() if r[-1] is not None}
    assert sorted(r[26] for r in stuck.values()) == ["inventory", "shipping"]  # waiting_on
    assert all(r[2] == "PENDING" and r[-1] == r[24] for r in stuck.values())


def _stuck(step: str, at: str = "2025-01-01T00:05:00.000000+00:00") -> Stuck:
    return Stuck(at, "e-" + step, step, "2025-01-01T00:00:01.000000+00:00", at)


CREATED = Created("2025-01-01T00:00:00.000000+00:00", 1, "[]")


@pytest.mark.parametrize(
    ("view", "shown"),
    [
        ({"created": CREATED, "stuck": _stuck("shipping")}, True),
        ({"stuck": _stuck("shipping")}, False),  # not created yet: not listed at all
        ({"created": CREATED}, False),
        (  # ended after the report: no longer stuck
            {
                "created": CREATED,
                "stuck": _stuck("shipping"),
                "terminal": Terminal("t", "e", "CANCELLED", "timed out", "shipping"),
            },
            False,
        ),
        # Past the step it was reported at (orders reports the next one if it is overdue).
        ({"created": CREATED, "stuck": _stuck("inventory"), "stock_status": "RESERVED"}, False),
        ({"created": CREATED, "stuck": _stuck("payments"), "payment_status": "CAPTURED"}, False),
        ({"created": CREATED, "stuck": _stuck("shipping"), "shipment_status": "SCHEDULED"}, False),
        ({"created": CREATED, "stuck": _stuck("shipping"), "payment_status": "CAPTURED"}, True),
    ],
)
def test_a_stuck_report_holds_while_the_order_waits_where_reported(view, shown):
    assert (stuck_now(view) is not None) == shown


def test_the_latest_stuck_report_wins_whatever_the_order_seen():
    first = _stuck("payments", "2025-01-01T00:05:00.000000+00:00")
    second = _stuck("shipping", "2025-01-01T00:06:00.000000+00:00")
    assert join({"stuck": first}, {"stuck": second})["stuck"] == second
    assert join({"stuck": second}, {"stuck": first})["stuck"] == second


# --- the customer balance rule -----------------------------------------------------------------


def test_balance_as_last_seen_is_payments_invariant_over_the_money_events_applied():
    c = Customer("c")
    c = apply_money(c, Money(deposited=1000), money_at="2025-01-01T00:00:00.000000+00:00")
    c = apply_money(c, Money(orders=1, captured=300), money_at="2025-01-03T00:00:00.000000+00:00")
    c = apply_money(c, Money(refunded=100), money_at="2025-01-02T00:00:00.000000+00:00")
    assert c.balance_cents == 1000 - 300 + 100
    assert c.balance_as_of == "2025-01-03T00:00:00.000000+00:00"  # the latest, not the last applied
    assert c.orders_count == 1


def test_a_decline_reports_a_snapshot_and_moves_no_money():
    c = apply_money(Customer("c"), Money(deposited=50))
    old = Decline("2025-01-01T00:00:00.000000+00:00", "e1", 40)
    new = Decline("2025-01-02T00:00:00.000000+00:00", "e0", 10)
    c = apply_money(c, decline=new)
    c = apply_money(c, decline=old)  # seen later, happened earlier
    assert c.last_decline == new and c.balance_cents == 50


def test_iso_is_fixed_width_utc():
    from datetime import timezone

    eastern = datetime(2025, 1, 1, 7, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert iso(eastern) == "2025-01-01T12:00:00.000000+00:00"
    assert iso(datetime(2025, 1, 1, 12, 0)) == "2025-01-01T12:00:00.000000+00:00"


# --- rows ----------------------------------------------------------------------------------------


@given(patches)
def test_order_rows_hold_the_whole_view(view):
    assert order_view(order_row("o", view)) == view


def test_row_tuples_are_in_the_tables_column_order():
    from sqlalchemy import MetaData

    md = MetaData()
    define_tables(md, "_t")
    orders = md.tables[ORDERS + "_t"]
    assert len(order_row("o", {"updated_at": "t"})) == len(orders.columns)
    assert [c.name for c in orders.columns][:3] == ["order_id", "customer_id", "status"]
    assert len(customer_row(Customer("c"))) == len(md.tables[CUSTOMERS + "_t"].columns)
    from services.query.figures import Sku

    assert len(sku_row(Sku("s"))) == len(md.tables[SKUS + "_t"].columns)
    row = customer_row(apply_money(Customer("c"), Money(1, 2, 3, 4), "t", Decline("t", "e", 5)))
    assert customer_from_row(row) == apply_money(
        Customer("c"), Money(1, 2, 3, 4), "t", Decline("t", "e", 5)
    )


@given(st.lists(st.tuples(st.text(), st.integers(0, 10**6)), max_size=5))
def test_stock_lines_are_stored_as_json_dumps_writes_them(lines):
    assert lines_json(tuple(lines)) == json.dumps(tuple(lines))
