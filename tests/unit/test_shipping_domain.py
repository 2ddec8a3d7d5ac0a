"""Shipping's rules: which addresses we serve, which carrier, how a shipment changes state."""

from __future__ import annotations

import pytest

from services.addresses import CARRIERS, DEFAULT_CARRIER, carrier_for, serviceable
from services.shipping.domain import (
    Shipment,
    Status,
    booked,
    idempotency_key,
    on_order_cancelled,
    on_payment_captured,
    undeliverable,
)

DEFAULT = frozenset({"DE", "FR", "NL", "BE", "GB", "US"})
ORDER = "3f1c2a7e-5b8d-4c3e-9a1f-0d2e4b6c8a10"


def capture(current: Shipment | None, country: str = "DE", postal_code: str = "10115"):
    return on_payment_captured(
        current,
        order_id=ORDER,
        country=country,
        postal_code=postal_code,
        supported=DEFAULT,
        shipment_id="shp-1",
    )


# --- serviceable ---------------------------------------------------------------------------


@pytest.mark.parametrize("country", sorted(DEFAULT))
def test_every_default_country_is_served(country):
    assert serviceable(country, "12345", DEFAULT) is None


def test_a_country_outside_the_set_is_refused_and_named():
    reason = serviceable("JP", "100-0001", DEFAULT)
    assert reason == "address not serviceable: country JP is not served"


def test_lower_case_country_is_the_same_country():
    assert serviceable("de", "10115", DEFAULT) is None
    assert serviceable(" fr ", "75001", DEFAULT) is None
    assert serviceable("jp", "100-0001", DEFAULT) == (
        "address not serviceable: country JP is not served"
    )


@pytest.mark.parametrize("postal_code", ["00000", "000001", "00000-1234", " 00000"])
def test_a_postal_code_starting_with_five_zeros_is_refused(postal_code):
    reason = serviceable("US", postal_code, DEFAULT)
    assert reason is not None
    assert reason.startswith("address not serviceable: postal code ")


@pytest.mark.parametrize("postal_code", ["0000", "00001", "10000", "100000", "", "SW1A 1AA"])
def test_other_postal_codes_are_served(postal_code):
    assert serviceable("GB", postal_code, DEFAULT) is None


def test_the_country_is_checked_before_the_postal_code():
    assert serviceable("JP", "00000", DEFAULT) == (
        "address not serviceable: country JP is not served"
    )


def test_an_empty_supported_set_serves_nothing():
    assert serviceable("DE", "10115", frozenset()) == (
        "address not serviceable: country DE is not served"
    )


def test_an_empty_country_is_refused():
    assert serviceable("", "10115", DEFAULT) == (
        "address not serviceable: country (none) is not served"
    )


def test_the_supported_set_is_configurable():
    assert serviceable("IT", "00100", frozenset({"IT"})) is None
    assert serviceable("DE", "10115", frozenset({"IT"})) is not None


# --- carrier -------------------------------------------------------------------------------


def test_carrier_is_fixed_per_country():
    assert carrier_for("DE") == "dhl"
    assert carrier_for("US") == "ups"
    assert carrier_for("fr") == "colissimo"
    assert carrier_for("DE") == carrier_for("DE")


def test_every_default_country_has_a_national_carrier():
    assert DEFAULT.issubset(CARRIERS)


def test_a_country_without_a_national_carrier_gets_the_default():
    assert carrier_for("IT") == DEFAULT_CARRIER


# --- payment captured ----------------------------------------------------------------------


def test_capture_for_a_served_address_schedules_with_the_country_carrier():
    assert capture(None, country="NL") == Shipment(ORDER, Status.SCHEDULED, "shp-1", "postnl")


def test_capture_for_an_unserved_address_fails_with_the_reason_and_no_carrier():
    shipment = capture(None, country="JP")
    assert shipment == Shipment(
        ORDER, Status.FAILED, "shp-1", reason="address not serviceable: country JP is not served"
    )


def test_capture_for_a_placeholder_postal_code_fails():
    shipment = capture(None, postal_code="00000")
    assert shipment is not None
    assert shipment.status is Status.FAILED
    assert shipment.carrier is None


@pytest.mark.parametrize(
    "current",
    [
        Shipment(ORDER, Status.TOMBSTONE, reason="customer changed their mind"),
        Shipment(ORDER, Status.SCHEDULED, "shp-0", "dhl"),
        Shipment(ORDER, Status.FAILED, "shp-0", reason="address not serviceable: x"),
        Shipment(ORDER, Status.CANCELLED, "shp-0", "dhl", reason="cancelled"),
    ],
    ids=lambda s: s.status.value,
)
def test_capture_never_makes_a_second_shipment_nor_ships_a_tombstoned_order(current):
    assert capture(current) is None


# --- order cancelled -----------------------------------------------------------------------


def test_cancel_before_any_shipment_leaves_a_tombstone():
    after = on_order_cancelled(None, order_id=ORDER, reason="changed mind")
    assert after == Shipment(ORDER, Status.TOMBSTONE, reason="changed mind")


def test_cancel_of_a_scheduled_shipment_cancels_it_keeping_id_and_carrier():
    scheduled = Shipment(ORDER, Status.SCHEDULED, "shp-1", "dhl")
    after = on_order_cancelled(scheduled, order_id=ORDER, reason="payment refunded")
    assert after == Shipment(ORDER, Status.CANCELLED, "shp-1", "dhl", reason="payment refunded")


@pytest.mark.parametrize(
    "current",
    [
        Shipment(ORDER, Status.TOMBSTONE, reason="first"),
        Shipment(ORDER, Status.CANCELLED, "shp-1", "dhl", reason="first"),
        Shipment(ORDER, Status.FAILED, "shp-1", reason="address not serviceable: x"),
    ],
    ids=lambda s: s.status.value,
)
def test_cancel_is_a_no_op_when_nothing_is_left_to_cancel(current):
    assert on_order_cancelled(current, order_id=ORDER, reason="second") is None


def test_cancel_then_capture_ships_nothing():
    tombstone = on_order_cancelled(None, order_id=ORDER, reason="changed mind")
    assert capture(tombstone) is None


def test_capture_then_cancel_then_cancel_changes_state_once():
    scheduled = capture(None)
    cancelled = on_order_cancelled(scheduled, order_id=ORDER, reason="r")
    assert cancelled is not None
    assert cancelled.status is Status.CANCELLED
    assert on_order_cancelled(cancelled, order_id=ORDER, reason="r") is None


def test_the_carriers_booking_is_the_shipment_and_its_refusal_a_failure():
    shipment = booked(None, order_id=ORDER, booking_id="bk-1", carrier="dhl")
    assert shipment == Shipment(ORDER, Status.SCHEDULED, "bk-1", "dhl")
    failed = undeliverable(None, order_id=ORDER, shipment_id="shp-1", reason="no")
    assert failed == Shipment(ORDER, Status.FAILED, "shp-1", reason="no")
    # An order that has a row already (a tombstone, a decision) gets no second one.
    tomb = Shipment(ORDER, Status.TOMBSTONE, reason="cancelled")
    assert booked(tomb, order_id=ORDER, booking_id="bk-2", carrier="dhl") is None
    assert undeliverable(tomb, order_id=ORDER, shipment_id="shp-2", reason="no") is None


def test_carrier_keys_are_a_function_of_operation_and_order():
    assert idempotency_key("book", ORDER) == idempotency_key("book", ORDER)
    assert idempotency_key("book", ORDER) != idempotency_key("cancel", ORDER)
    assert idempotency_key("book", ORDER) == "b196168f-6cc5-576f-8975-c58eed3eda1d"
