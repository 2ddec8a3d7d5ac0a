"""What every service's read API does with a row it looks up by key: read it in a session of
its own, and answer 404 with the detail (FastAPI's JSON body ``{"detail": ...}``) when there
is none."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import HTTPException
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from events.db import Database

T = TypeVar("T")


class NotFound(BaseModel):
    """The body of a 404, for the OpenAPI document."""

    detail: str


NOT_FOUND: dict[int | str, dict[str, object]] = {404: {"model": NotFound}}
"""A route's ``responses=`` for a 404 it documents."""


async def read_or_404(
    db: Database, read: Callable[[AsyncSession], Awaitable[T | None]], detail: str
) -> T:
    """What ``read`` finds in a new session, or a 404 saying ``detail`` when it finds None."""
    async with db.session() as session:
        found = await read(session)
    if found is None:
        raise HTTPException(404, detail=detail)
    return found
