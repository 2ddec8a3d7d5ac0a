"""Finding the events of a failed projection batch that cannot be applied (no I/O)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition

from events.isolation import Isolation
from events.reading import Positions
from events.routing import RetryPolicy

TP = TopicPartition("t", 0)
NO_WAIT = RetryPolicy(attempts=2, initial_s=0.0, max_s=0.0)


class Books:
    """A projection whose transaction fails when it holds a poison event."""

    def __init__(self, poison: set[int], infrastructure_at: int | None = None) -> None:
        self.poison, self.infrastructure_at = poison, infrastructure_at
        self.applied: list[int] = []
        self.positions: Positions = {}
        self.dead = self.undecodable = self.commits = 0
        self.dead_lettered: list[tuple[int, int]] = []  # (offset, attempts)

    async def commit(self, events: list[Any], positions: Positions, dead: int, bad: int) -> bool:
        self.commits += 1
        offsets = [e.offset for e in events]
        if self.infrastructure_at in offsets:
            raise OSError("connection reset")
        if self.poison & set(offsets):
            raise ValueError(f"poison in {offsets}")
        self.applied += offsets
        assert all(p >= self.positions.get(tp, 0) for tp, p in positions.items())
        self.positions.update(positions)
        self.dead += dead
        self.undecodable += bad
        return True

    async def on_poison(self, event: Any, error: BaseException, attempts: int) -> None:
        assert isinstance(error, ValueError)
        self.dead_lettered.append((event.offset, attempts))


def events(n: int) -> list[Any]:
    return [SimpleNamespace(topic="t", partition=0, offset=i) for i in range(n)]


def test_the_poison_events_are_passed_and_the_rest_applied_in_order() -> None:
    books = Books(poison={3, 700})
    batch = events(1000)
    isolation = Isolation(batch, {TP: 1002}, 2, books.commit, books.on_poison, NO_WAIT)
    assert asyncio.run(isolation.split(ValueError("batch failed")))
    assert books.applied == [i for i in range(1000) if i not in (3, 700)]
    assert books.dead_lettered == [(3, 2), (700, 2)] and books.dead == 2
    assert books.positions == {TP: 1002}  # past the batch's unhandled tail too
    assert books.undecodable == 2  # counted once, with the batch's end
    assert isolation.poisoned == 2
    assert books.commits < 60  # bisection, not one transaction per event


def test_a_batch_of_one_poison_event_is_retried_then_passed() -> None:
    books = Books(poison={0})
    isolation = Isolation(events(1), {TP: 1}, 0, books.commit, books.on_poison, NO_WAIT)
    assert asyncio.run(isolation.split(ValueError("failed")))
    assert books.applied == [] and books.dead_lettered == [(0, 2)]
    assert books.positions == {TP: 1} and books.dead == 1


def test_an_infrastructure_error_stops_the_search_without_dead_lettering() -> None:
    books = Books(poison={2}, infrastructure_at=6)
    isolation = Isolation(events(8), {TP: 8}, 0, books.commit, books.on_poison, NO_WAIT)
    with pytest.raises(OSError):
        asyncio.run(isolation.split(ValueError("failed")))
    assert books.dead_lettered == [(2, 2)]
    assert books.applied == [0, 1, 3] and books.positions == {TP: 4}
