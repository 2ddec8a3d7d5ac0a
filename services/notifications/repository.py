"""Notifications' statements: the one notification each order's customer received."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, select

from events.prepared import Prepared, Row
from events.repository import KeyedRows, Repository
from services.notifications.domain import Notification
from services.notifications.tables import sent

_SENT = KeyedRows(sent.c.order_id)
_NOTIFIED = Prepared(select(sent.c.order_id).where(sent.c.order_id == bindparam("order_id")))


class NotificationsRepository(Repository):
    """Notifications' rows in one session (a unit of work's, or a read's)."""

    __slots__ = ()

    async def notified(self, order_id: str) -> bool:
        """Whether the order's customer was told already."""
        return await _NOTIFIED.first(self.session, {"order_id": order_id}) is not None

    async def insert(self, note: Notification, cause_event_id: str, now: datetime) -> None:
        await _SENT.insert(
            self.session,
            {
                "order_id": note.order_id,
                "notification_id": note.notification_id,
                "customer_id": note.customer_id,
                "order_status": note.order_status.value,
                "message": note.message,
                "cause_event_id": cause_event_id,
                "notified_at": now,
            },
        )

    async def get(self, order_id: str) -> Row | None:
        return await _SENT.get(self.session, order_id)
