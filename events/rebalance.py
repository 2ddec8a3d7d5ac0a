"""The consumer's rebalance listener: a revocation waits for the batch in hand to commit,
so no partition is given up mid-batch."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

from aiokafka import ConsumerRebalanceListener, TopicPartition

Hook = Callable[[], Awaitable[None]]


class BatchLock(ConsumerRebalanceListener):  # type: ignore[misc]
    """Held while a batch is processed; ``before_revoke`` runs under it (the offsets'
    flush), ``after_assign`` after an assignment (re-reading the blocked keys)."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.assigned: set[TopicPartition] = set()
        # True once the group gave this member its share, none included: it is in the
        # group and waiting (more members than partitions), not starting.
        self.joined = False
        self.before_revoke: Hook | None = None
        self.after_assign: Callable[[], None] | None = None

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        async with self.lock:
            if self.before_revoke is not None:
                await self.before_revoke()
            self.assigned -= set(revoked)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.assigned = set(assigned)
        self.joined = True
        if self.after_assign is not None:
            self.after_assign()
