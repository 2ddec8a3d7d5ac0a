"""Notification rules: the text for each way an order ends, and one notification per order."""

from __future__ import annotations

import pytest

from schemas.models import ORDER_STATUSES
from services.notifications.domain import (
    Notification,
    OrderStatus,
    Outcome,
    message_for,
    notify,
)

ORDER = "3f1c2a7e-5b8d-4c3e-9a1f-0d2e4b6c8a10"


def outcome(status: OrderStatus, detail: str = "") -> Outcome:
    return Outcome(ORDER, "cust-1", status, detail)


def test_completed_message_names_the_order_and_shipment():
    text = message_for(outcome(OrderStatus.COMPLETED, "shp-9"))
    assert text == f"Good news: your order {ORDER} is complete and on its way (shipment shp-9)."


def test_rejected_message_gives_the_reason():
    text = message_for(outcome(OrderStatus.REJECTED, "out of stock: sku-1"))
    assert text == f"Sorry, we could not accept your order {ORDER}: out of stock: sku-1."


def test_cancelled_message_gives_the_reason():
    text = message_for(outcome(OrderStatus.CANCELLED, "insufficient funds"))
    assert text == f"Your order {ORDER} was cancelled: insufficient funds."


@pytest.mark.parametrize("reason", ["", "   "])
def test_an_empty_reason_leaves_no_dangling_colon(reason):
    assert message_for(outcome(OrderStatus.CANCELLED, reason)) == (
        f"Your order {ORDER} was cancelled."
    )
    assert message_for(outcome(OrderStatus.REJECTED, reason)) == (
        f"Sorry, we could not accept your order {ORDER}."
    )


@pytest.mark.parametrize("status", list(OrderStatus))
def test_every_terminal_status_has_a_message_naming_the_order(status):
    assert ORDER in message_for(outcome(status, "x"))


def test_the_statuses_are_the_contract_vocabulary():
    assert {s.value for s in OrderStatus} == set(ORDER_STATUSES)


def test_first_terminal_event_notifies():
    note = notify(outcome(OrderStatus.COMPLETED, "shp-1"), False, notification_id="n-1")
    assert note == Notification(
        notification_id="n-1",
        order_id=ORDER,
        customer_id="cust-1",
        order_status=OrderStatus.COMPLETED,
        message=message_for(outcome(OrderStatus.COMPLETED, "shp-1")),
    )


@pytest.mark.parametrize("status", list(OrderStatus))
def test_any_later_terminal_event_for_the_order_is_ignored(status):
    assert notify(outcome(status, "again"), True, notification_id="n-2") is None
