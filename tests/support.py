"""Test helpers: waiting on conditions with a deadline, random names."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def eventually(
    condition: Callable[[], Any | Awaitable[Any]],
    *,
    deadline_s: float = 30.0,
    poll_s: float = 0.05,
    what: str = "condition",
) -> Any:
    """Wait until ``condition()`` is truthy; fail with ``what`` when the deadline passes."""
    end = time.monotonic() + deadline_s
    last: Any = None
    while True:
        last = condition()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if time.monotonic() > end:
            raise AssertionError(
                f"timed out after {deadline_s}s waiting for {what} (last={last!r})"
            )
        await asyncio.sleep(poll_s)  # poll interval between checks of the condition
