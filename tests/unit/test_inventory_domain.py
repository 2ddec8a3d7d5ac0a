"""Inventory's stock rules, as a specification (no I/O)."""

from __future__ import annotations

import copy

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from services.inventory.domain import (
    Line,
    Reservation,
    ReservationStatus,
    Shortage,
    Shortages,
    StockLevel,
    new_price,
    release,
    requested_per_sku,
    reserve,
    ship,
)


def stocked(**on_hand: int) -> dict[str, StockLevel]:
    levels = {sku: StockLevel(sku) for sku in on_hand}
    for sku, quantity in on_hand.items():
        if quantity:
            levels[sku].restock(quantity)
    return levels


def test_restock_adds_to_on_hand_and_received():
    level = StockLevel("A")
    level.restock(5)
    level.restock(2)
    assert (level.on_hand, level.reserved, level.shipped, level.received) == (7, 0, 0, 7)


def test_reserving_holds_every_line():
    stock = stocked(A=5, B=2)
    outcome = reserve(stock, [Line("A", 3), Line("B", 2)])
    assert outcome == Reservation((Line("A", 3), Line("B", 2)), ReservationStatus.RESERVED)
    assert (stock["A"].on_hand, stock["A"].reserved) == (2, 3)
    assert (stock["B"].on_hand, stock["B"].reserved) == (0, 2)


def test_exactly_what_is_on_hand_can_be_reserved():
    stock = stocked(A=3)
    assert isinstance(reserve(stock, [Line("A", 3)]), Reservation)
    assert stock["A"].on_hand == 0


def test_one_short_line_reserves_nothing_at_all():
    stock = stocked(A=5, B=1)
    before = copy.deepcopy(stock)
    outcome = reserve(stock, [Line("A", 3), Line("B", 2)])
    assert outcome == Shortages((Line("A", 3), Line("B", 2)), (Shortage("B", 2, 1),))
    assert stock == before


def test_shortages_are_reported_per_sku_unknown_skus_have_none():
    stock = stocked(A=1, B=9)
    outcome = reserve(stock, [Line("A", 2), Line("B", 1), Line("Z", 4), Line("A", 1)])
    assert isinstance(outcome, Shortages)
    # A is asked for twice: the order needs 3 in total, more than the 1 on hand.
    assert outcome.shortages == (Shortage("A", 3, 1), Shortage("Z", 4, 0))
    assert outcome.reason == (
        "insufficient stock: A (requested 3, available 1), Z (requested 4, available 0)"
    )


def test_a_sku_named_twice_is_held_line_by_line():
    stock = stocked(A=4)
    outcome = reserve(stock, [Line("A", 1), Line("A", 3)])
    assert isinstance(outcome, Reservation)
    assert outcome.skus == ["A"]
    assert (stock["A"].on_hand, stock["A"].reserved) == (0, 4)


@pytest.mark.parametrize("lines", [[], [Line("A", 0)], [Line("A", -1)]])
def test_an_order_without_positive_lines_is_refused(lines):
    with pytest.raises(ValueError):
        reserve(stocked(A=5), lines)


def test_requested_per_sku_keeps_first_seen_order():
    assert requested_per_sku([Line("B", 1), Line("A", 2), Line("B", 3)]) == {"B": 4, "A": 2}


def test_release_puts_a_reservation_back_once():
    stock = stocked(A=5)
    reservation = reserve(stock, [Line("A", 2)])
    assert isinstance(reservation, Reservation)
    assert release(reservation, stock) is True
    assert reservation.status is ReservationStatus.RELEASED
    after = copy.deepcopy(stock)
    assert (after["A"].on_hand, after["A"].reserved) == (5, 0)
    assert release(reservation, stock) is False
    assert stock == after


def test_ship_takes_a_reservation_out_once():
    stock = stocked(A=5)
    reservation = reserve(stock, [Line("A", 2)])
    assert isinstance(reservation, Reservation)
    assert ship(reservation, stock) is True
    assert reservation.status is ReservationStatus.SHIPPED
    after = copy.deepcopy(stock)
    assert (after["A"].on_hand, after["A"].reserved, after["A"].shipped) == (3, 0, 2)
    assert ship(reservation, stock) is False
    assert release(reservation, stock) is False  # what left the warehouse is not released
    assert stock == after


@pytest.mark.parametrize(
    "status", [ReservationStatus.REJECTED, ReservationStatus.RELEASED, ReservationStatus.SHIPPED]
)
def test_only_a_held_reservation_moves_stock(status):
    stock = stocked(A=5)
    reservation = Reservation((Line("A", 2),), status)
    assert release(reservation, stock) is False
    assert ship(reservation, stock) is False
    assert stock == stocked(A=5)
    assert reservation.status is status


def test_levels_refuse_to_go_negative():
    level = StockLevel("A", on_hand=1, reserved=1, received=2)
    with pytest.raises(ValueError):
        level.hold(2)
    with pytest.raises(ValueError):
        level.unhold(2)
    with pytest.raises(ValueError):
        level.ship(2)
    assert level == StockLevel("A", on_hand=1, reserved=1, received=2)


SKUS = ("A", "B", "C")
quantities = st.integers(min_value=1, max_value=6)


class StockBooks(RuleBasedStateMachine):
    """Random restocks, orders, releases and shipments, repeated and in any order."""

    @initialize()
    def empty(self) -> None:
        self.stock: dict[str, StockLevel] = {}
        self.reservations: list[Reservation] = []

    @rule(sku=st.sampled_from(SKUS), quantity=quantities)
    def restock(self, sku: str, quantity: int) -> None:
        self.stock.setdefault(sku, StockLevel(sku)).restock(quantity)

    @rule(lines=st.lists(st.tuples(st.sampled_from(SKUS), quantities), min_size=1, max_size=4))
    def place(self, lines: list[tuple[str, int]]) -> None:
        before = copy.deepcopy(self.stock)
        outcome = reserve(self.stock, [Line(sku, q) for sku, q in lines])
        if isinstance(outcome, Shortages):
            assert self.stock == before  # all or nothing
            assert outcome.shortages
        else:
            self.reservations.append(outcome)

    @precondition(lambda self: self.reservations)
    @rule(pick=st.integers(min_value=0), act=st.sampled_from([release, ship]))
    def settle(self, pick: int, act) -> None:
        reservation = self.reservations[pick % len(self.reservations)]
        was_held = reservation.status is ReservationStatus.RESERVED
        before = copy.deepcopy(self.stock)
        assert act(reservation, self.stock) is was_held
        if not was_held:
            assert self.stock == before  # a second release or shipment is a no-op

    @invariant()
    def books_balance(self) -> None:
        for level in self.stock.values():
            assert level.on_hand + level.reserved == level.received - level.shipped
            assert min(level.on_hand, level.reserved, level.shipped) >= 0

    @invariant()
    def reserved_is_what_held_reservations_hold(self) -> None:
        held: dict[str, int] = {}
        for r in self.reservations:
            if r.status is ReservationStatus.RESERVED:
                for line in r.lines:
                    held[line.sku] = held.get(line.sku, 0) + line.quantity
        assert {s: lv.reserved for s, lv in self.stock.items() if lv.reserved} == held


StockBooks.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestStockBooks = StockBooks.TestCase


def test_a_restock_changes_the_price_only_when_it_names_another():
    assert new_price(None, 150) == 150  # the first price
    assert new_price(150, 200) == 200
    assert new_price(150, 0) == 0  # free is a price
    assert new_price(150, 150) is None  # unchanged: no fact to publish
    assert new_price(150, None) is None  # no price named: keep it
    assert new_price(None, None) is None
    with pytest.raises(ValueError, match="negative"):
        new_price(None, -1)
