"""Finding the events of a failed batch that cannot be applied, by bisection: shared by the
live projection runner (events.projection) and a replay (events.replay)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from sqlalchemy.exc import ProgrammingError

from events.db import is_transient
from events.envelope import Event
from events.reading import Positions
from events.routing import RetryPolicy

Commit = Callable[[list[Event[Any]], Positions, int, int], Awaitable[bool]]
"""One transaction: applies the events, saves the positions, counts that many dead-lettered
and undecodable events; False when it did not apply them (a replay switched generations)."""
OnPoison = Callable[[Event[Any], BaseException, int], Awaitable[None]]
"""Called with an event that failed every attempt, its last error and the attempts made."""


def is_infrastructure(exc: BaseException) -> bool:
    """The database, the network or the broker failed, not the event: never a poison. So
    did the schema on a ProgrammingError (a missing table or column): statements are the
    projection's own, with the events' values bound, so no event can cause one, and taking
    it for a poison would dead-letter every event until the schema is fixed."""
    return isinstance(exc, OSError | KafkaError | ProgrammingError) or is_transient(exc)


class Isolation:
    """Finds the events of a failed batch that cannot be applied, by bisection, and applies
    the rest in order.

    A batch that failed as a whole is split in halves, each applied in a transaction of its
    own (with the positions it reaches), the failing ones split again: one poison event
    among 2,000 costs about 22 transactions, not 2,000. An event that fails alone is tried
    ``retry.attempts`` times in all, then handed to ``on_poison`` and passed: the positions
    past it are saved with its count in one transaction. An infrastructure error stops the
    search (raised): what was committed stays, the caller reads on from its saved offsets.
    """

    def __init__(
        self,
        events: Sequence[Event[Any]],
        end: Positions,
        undecodable: int,
        commit: Commit,
        on_poison: OnPoison,
        retry: RetryPolicy,
    ) -> None:
        self.events, self.end, self.undecodable = events, end, undecodable
        self.commit, self.on_poison, self.retry = commit, on_poison, retry
        self.poisoned = 0

    async def split(self, error: BaseException) -> bool:
        """Applies the batch that failed with ``error``; False if a commit did not apply."""
        return await self._split(0, len(self.events), error)

    async def _split(self, lo: int, hi: int, error: BaseException) -> bool:
        if hi - lo == 1:
            return await self._alone(lo, error)
        mid = (lo + hi) // 2
        for a, b in ((lo, mid), (mid, hi)):
            try:
                if not await self._commit(a, b):
                    return False
            except Exception as exc:
                if is_infrastructure(exc):
                    raise
                if not await self._split(a, b, exc):
                    return False
        return True

    async def _alone(self, i: int, error: BaseException) -> bool:
        attempt = 1  # it failed once already, alone or in its segment
        while attempt < self.retry.attempts:
            await asyncio.sleep(self.retry.delay(attempt))  # backoff between attempts
            attempt += 1
            try:
                return await self._commit(i, i + 1)
            except Exception as exc:
                if is_infrastructure(exc):
                    raise
                error = exc
        await self.on_poison(self.events[i], error, attempt)
        self.poisoned += 1
        return await self._commit(i, i + 1, poison=True)

    async def _commit(self, lo: int, hi: int, *, poison: bool = False) -> bool:
        last = hi == len(self.events)
        events = [] if poison else list(self.events[lo:hi])
        undecodable = self.undecodable if last else 0  # counted once, with the batch's end
        return await self.commit(events, self._through(hi), int(poison), undecodable)

    def _through(self, hi: int) -> Positions:
        """The positions just past ``events[:hi]`` (the batch's end for the last one, which
        also passes the records the projection does not handle)."""
        if hi == len(self.events):
            return dict(self.end)
        out: Positions = {}
        for event in self.events[:hi]:
            out[TopicPartition(event.topic, event.partition)] = event.offset + 1
        return out
