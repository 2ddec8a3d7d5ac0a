"""Handler registration: which function handles which event type, and how failures retry."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from events.envelope import Event
from events.models import EventModel

if TYPE_CHECKING:
    from events.outbox import UnitOfWork

M = TypeVar("M", bound=EventModel)
HandlerFn = Callable[["UnitOfWork", Event[Any]], Awaitable[None]]
LockAheadFn = Callable[["UnitOfWork", Sequence[Event[Any]]], Awaitable[None]]


class PermanentError(Exception):
    """A handler failure that no retry can fix: the event goes to the dead-letter topic.

    Its key is then blocked for the consumer (sequenced dead letters, events.parking): the
    key's later events wait until this one is re-driven or released."""

    blocks_key = True


class Refusal(PermanentError):
    """An event refused for good on its own merits (a request the domain turns down, e.g. a
    deposit that would overflow): dead-lettered with the reason, but its key is not blocked,
    since the key's later events do not depend on it."""

    blocks_key = False


@contextmanager
def refusing(*errors: type[Exception]) -> Iterator[None]:
    """Turns the domain's refusals (``errors``) raised inside into a ``Refusal``, whose
    message is the domain's reason."""
    try:
        yield
    except errors as exc:
        raise Refusal(str(exc)) from exc


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    event_type: str
    fn: HandlerFn
    model: type[EventModel] | None
    # False for events that do not depend on the earlier events of their key (a request
    # from outside the saga, such as a deposit): one that is dead-lettered blocks nothing.
    sequenced: bool = True


class Router:
    """Collects handlers, declared one way: ``@router.on(Model)``; a service hands its router
    to the consumer runtime."""

    def __init__(self) -> None:
        self.handlers: dict[str, HandlerSpec] = {}
        self.lock_ahead: LockAheadFn | None = None

    def locks_ahead(self, fn: LockAheadFn) -> LockAheadFn:
        """Registers ``fn``, run in each batch's transaction before its handlers with the
        batch's events: it takes the row locks the handlers will take, all at once in one
        order (sorted keys). Locked event by event, two consumers sharing a database (two
        instances) could take shared rows in opposite orders and deadlock."""
        if self.lock_ahead is not None:
            raise ValueError("two lock-ahead functions")
        self.lock_ahead = fn
        return fn

    def on(
        self, model: type[M], *, sequenced: bool = True
    ) -> Callable[
        [Callable[[UnitOfWork, Event[M]], Awaitable[None]]],
        Callable[[UnitOfWork, Event[M]], Awaitable[None]],
    ]:
        """Registers the decorated function as the handler of ``model``'s events."""

        def register(
            fn: Callable[[UnitOfWork, Event[M]], Awaitable[None]],
        ) -> Callable[[UnitOfWork, Event[M]], Awaitable[None]]:
            if model.event_type in self.handlers:
                raise ValueError(f"two handlers for {model.event_type}")
            self.handlers[model.event_type] = HandlerSpec(model.event_type, fn, model, sequenced)
            return fn

        return register


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter for failing handlers."""

    attempts: int = 5
    initial_s: float = 0.05
    max_s: float = 2.0

    def delay(self, attempt: int) -> float:
        ceiling = min(self.max_s, self.initial_s * (2 ** (attempt - 1)))
        return random.uniform(ceiling / 2, ceiling)
