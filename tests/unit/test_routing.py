"""events.routing: handlers are declared one way, ``@router.on(Model)``; a domain refusal
becomes a Refusal."""

from __future__ import annotations

import pytest

from events.envelope import Event
from events.outbox import UnitOfWork
from events.routing import PermanentError, Refusal, Router, refusing
from schemas.models import FundsDeposited, StockReserved


def test_on_registers_the_models_event_type() -> None:
    router = Router()

    @router.on(StockReserved)
    async def reserved(uow: UnitOfWork, event: Event[StockReserved]) -> None:
        return None

    @router.on(FundsDeposited, sequenced=False)
    async def deposited(uow: UnitOfWork, event: Event[FundsDeposited]) -> None:
        return None

    spec = router.handlers["StockReserved"]
    assert (spec.fn, spec.model, spec.sequenced) == (reserved, StockReserved, True)
    assert router.handlers["FundsDeposited"].sequenced is False
    assert set(router.handlers) == {"StockReserved", "FundsDeposited"}


def test_a_second_handler_for_a_type_is_refused() -> None:
    router = Router()

    @router.on(StockReserved)
    async def first(uow: UnitOfWork, event: Event[StockReserved]) -> None:
        return None

    async def second(uow: UnitOfWork, event: Event[StockReserved]) -> None:
        return None

    with pytest.raises(ValueError, match="two handlers for StockReserved"):
        router.on(StockReserved)(second)
    assert router.handlers["StockReserved"].fn is first


class _Overdrawn(ValueError):
    pass


def test_refusing_turns_the_domains_refusal_into_a_refusal() -> None:
    with pytest.raises(Refusal, match=r"^over the limit$") as caught, refusing(_Overdrawn):
        raise _Overdrawn("over the limit")
    assert isinstance(caught.value.__cause__, _Overdrawn)
    assert caught.value.blocks_key is False and isinstance(caught.value, PermanentError)


def test_refusing_lets_other_errors_through() -> None:
    with pytest.raises(KeyError), refusing(_Overdrawn):
        raise KeyError("not a refusal")
