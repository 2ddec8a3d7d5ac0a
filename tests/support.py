"""Test helpers: waiting on conditions with a deadline, random names, running a command."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from events.settings import REPO_ROOT


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


def run_module(
    module: str, *args: str, env: dict[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` from the repository's root, as a user runs a command:
    its own process, output captured, the exit status left to the caller."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
