"""Stock rules: reserve all lines of an order or none, release and ship reservations; a
restock's price. Standard library only.

Per SKU the books always balance: ``on_hand + reserved == received - shipped``.
Every stored count is a 64-bit integer: a restock that would push the SKU's received total
past ``INT64_MAX`` is refused (``Refused``); on hand, reserved and shipped never exceed it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

INT64_MAX = 2**63 - 1  # what a BIGINT column (and SQLite's INTEGER) holds


class Refused(ValueError):
    """A request the stock cannot take (a sum past ``INT64_MAX``); no retry changes that,
    so the handler's event is dead-lettered with this reason."""


class ReservationStatus(StrEnum):
    RESERVED = "RESERVED"
    REJECTED = "REJECTED"
    RELEASED = "RELEASED"
    SHIPPED = "SHIPPED"


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int


@dataclass
class StockLevel:
    sku: str
    on_hand: int = 0
    reserved: int = 0
    shipped: int = 0
    received: int = 0

    def restock(self, quantity: int) -> None:
        _positive(quantity)
        if quantity > INT64_MAX - max(self.on_hand, self.received):
            raise Refused(
                f"restock of {quantity} {self.sku} refused: received total {self.received} "
                f"would pass {INT64_MAX}"
            )
        self.on_hand += quantity
        self.received += quantity

    def hold(self, quantity: int) -> None:
        _positive(quantity)
        if quantity > self.on_hand:
            raise ValueError(f"{self.sku}: cannot hold {quantity}, {self.on_hand} on hand")
        self.on_hand -= quantity
        self.reserved += quantity

    def unhold(self, quantity: int) -> None:
        self.reserved -= self._take_reserved(quantity)
        self.on_hand += quantity

    def ship(self, quantity: int) -> None:
        self.reserved -= self._take_reserved(quantity)
        self.shipped += quantity

    def _take_reserved(self, quantity: int) -> int:
        _positive(quantity)
        if quantity > self.reserved:
            raise ValueError(f"{self.sku}: cannot take {quantity}, {self.reserved} reserved")
        return quantity


@dataclass(frozen=True)
class Shortage:
    sku: str
    requested: int
    available: int


@dataclass
class Reservation:
    lines: tuple[Line, ...]
    status: ReservationStatus = ReservationStatus.RESERVED

    @property
    def skus(self) -> list[str]:
        return list(dict.fromkeys(line.sku for line in self.lines))


@dataclass(frozen=True)
class Shortages:
    """Why an order could not be reserved: what it asked for and, per SKU, what was short."""

    lines: tuple[Line, ...]
    shortages: tuple[Shortage, ...]

    @property
    def reason(self) -> str:
        return "insufficient stock: " + ", ".join(
            f"{s.sku} (requested {s.requested}, available {s.available})" for s in self.shortages
        )


def new_price(current: int | None, requested: int | None) -> int | None:
    """The SKU's price after a restock that asks for ``requested`` (None: keep it), or None
    when the price does not change (so that no fact is published for it)."""
    if requested is None or requested == current:
        return None
    if requested < 0:
        raise ValueError(f"a unit price cannot be negative, got {requested}")
    return requested


def requested_per_sku(lines: Iterable[Line]) -> dict[str, int]:
    """Total quantity per SKU, in first-seen order: an order may name a SKU twice."""
    totals: dict[str, int] = {}
    for line in lines:
        _positive(line.quantity)
        totals[line.sku] = totals.get(line.sku, 0) + line.quantity
    if not totals:
        raise ValueError("an order needs at least one line")
    return totals


def reserve(stock: Mapping[str, StockLevel], lines: Iterable[Line]) -> Reservation | Shortages:
    """Holds every line, or nothing when any SKU is short (a missing SKU has none on hand).

    On success the levels in ``stock`` are changed in place. The order's lines are kept as
    given (each fits the contracts' 32-bit quantity; a per-SKU sum might not).
    """
    wanted = tuple(lines)
    shortages = tuple(
        Shortage(sku, quantity, _on_hand(stock, sku))
        for sku, quantity in requested_per_sku(wanted).items()
        if quantity > _on_hand(stock, sku)
    )
    if shortages:
        return Shortages(wanted, shortages)
    for line in wanted:
        stock[line.sku].hold(line.quantity)
    return Reservation(wanted)


def release(reservation: Reservation, stock: Mapping[str, StockLevel]) -> bool:
    """Puts a held reservation back on hand; False (nothing changes) unless it is RESERVED."""
    return _settle(reservation, stock, StockLevel.unhold, ReservationStatus.RELEASED)


def ship(reservation: Reservation, stock: Mapping[str, StockLevel]) -> bool:
    """Moves a held reservation out of the warehouse; False unless it is RESERVED."""
    return _settle(reservation, stock, StockLevel.ship, ReservationStatus.SHIPPED)


def _settle(
    reservation: Reservation,
    stock: Mapping[str, StockLevel],
    take: Callable[[StockLevel, int], None],
    status: ReservationStatus,
) -> bool:
    """Takes every line of a held reservation off reserved (``take``: back on hand, or out
    of the warehouse) and marks it ``status``; False unless it is RESERVED."""
    if reservation.status is not ReservationStatus.RESERVED:
        return False
    for line in reservation.lines:
        take(stock[line.sku], line.quantity)
    reservation.status = status
    return True


def _on_hand(stock: Mapping[str, StockLevel], sku: str) -> int:
    level = stock.get(sku)
    return level.on_hand if level is not None else 0


def _positive(quantity: int) -> None:
    if quantity < 1:
        raise ValueError(f"quantity must be positive, got {quantity}")
