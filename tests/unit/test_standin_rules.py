"""The stand-ins' pure parts: faults as state, the provider's and the carrier's rules, and
how an idempotency key's request is fingerprinted."""

from __future__ import annotations

from events.supervisor import load_manifest
from services.addresses import carrier_for, serviceable
from services.provider.domain import (
    Refusal,
    Status,
    capture_refusal,
    decline_reason,
    refund_refusal,
    void_refusal,
)
from services.standin.faults import Faults
from services.standin.idempotency import fingerprint
from services.standin.metrics import outcome


def test_a_timed_outage_ends_by_itself_and_down_false_ends_it_early() -> None:
    faults = Faults()
    faults.set(100.0, down_for_s=5)
    assert faults.refuses(104.9, draw=0.99) and faults.down_for(104.0) == 1.0
    assert not faults.refuses(105.0, draw=0.99)
    faults.set(200.0, down_for_s=5)
    faults.set(201.0, down=False)
    assert not faults.is_down(201.5)
    faults.set(300.0, down=True)
    assert faults.is_down(10_000.0) and faults.down_for(300.0) is None


def test_the_failure_rate_compares_with_the_draw_and_set_keeps_what_is_not_given() -> None:
    faults = Faults()
    faults.set(0.0, failure_rate=0.25, latency_ms=200)
    assert faults.refuses(0.0, draw=0.2) and not faults.refuses(0.0, draw=0.25)
    faults.set(0.0, latency_ms=0)
    assert faults.failure_rate == 0.25
    assert faults.view(0.0) == {
        "failure_rate": 0.25,
        "latency_ms": 0,
        "down": False,
        "down_for_s": None,
    }


def test_the_provider_declines_listed_customers_and_amounts_over_its_limit() -> None:
    assert decline_reason("c", 100, declined=frozenset({"x"}), max_amount_cents=100) is None
    assert decline_reason("x", 1, declined=frozenset({"x"}), max_amount_cents=100)
    assert "exceeds" in (decline_reason("c", 101, declined=frozenset(), max_amount_cents=100) or "")


def status(refusal: Refusal | None) -> int | None:
    return None if refusal is None else refusal.status


def test_an_authorisation_moves_once_and_refunds_stay_within_the_capture() -> None:
    assert capture_refusal(Status.AUTHORISED, 500, 500) is None
    assert status(capture_refusal(Status.AUTHORISED, 500, 501)) == 422
    assert status(capture_refusal(Status.CAPTURED, 500, 1)) == 409
    assert status(capture_refusal(Status.VOIDED, 500, 1)) == 409
    assert void_refusal(Status.VOIDED) is None and void_refusal(Status.AUTHORISED) is None
    assert status(void_refusal(Status.CAPTURED)) == 409
    assert refund_refusal(500, 300, 200) is None
    assert status(refund_refusal(500, 300, 201)) == 422


def test_the_carrier_keeps_shippings_address_rules() -> None:
    served = frozenset({"DE", "FR"})
    assert serviceable(" de ", "10115", served) is None
    assert "country JP" in (serviceable("JP", "1", served) or "")
    assert "'00000'" in (serviceable("FR", "00000", served) or "")
    assert carrier_for("fr") == "colissimo" and carrier_for("JP") == "dhl-express"


def test_a_fingerprint_is_the_request_whatever_the_key_order() -> None:
    a = fingerprint("POST", "/v1/x", {"a": 1, "b": [1, 2]})
    assert a == fingerprint("POST", "/v1/x", {"b": [1, 2], "a": 1})
    assert a != fingerprint("POST", "/v1/y", {"a": 1, "b": [1, 2]})
    assert a != fingerprint("POST", "/v1/x", {"a": 2, "b": [1, 2]})


def test_outcomes_name_replays_refusals_and_errors() -> None:
    assert [outcome(201, False), outcome(201, True), outcome(402, False), outcome(500, False)] == [
        "done",
        "replayed",
        "refused",
        "error",
    ]


def test_the_manifest_starts_the_stand_ins_first_and_marks_them() -> None:
    specs = load_manifest()
    assert [(s.name, s.port, s.stand_in, s.replicated) for s in specs[:2]] == [
        ("provider", 8108, True, False),
        ("carrier", 8109, True, False),
    ]
    assert not any(s.stand_in for s in specs[2:])
