"""The carrier stand-in as a real process over real HTTP: bookings under idempotency keys
(a repeat answers the first answer and books once, also when requests race), the address
rules that moved here from shipping, cancellations, and injected faults."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from events.settings import REPO_ROOT
from tests.external import StandInProcess, running_standin

pytestmark = pytest.mark.integration


def key() -> str:
    return str(uuid.uuid4())


def booking(country: str = "DE", postal_code: str = "10115") -> dict[str, Any]:
    return {
        "reference": f"o-{uuid.uuid4().hex[:8]}",
        "address": {
            "line1": "1 Main St",
            "city": "Berlin",
            "postal_code": postal_code,
            "country": country,
        },
    }


async def book(
    http: httpx.AsyncClient, body: dict[str, Any], idem: str | None = None
) -> httpx.Response:
    return await http.post("/v1/bookings", json=body, headers={"Idempotency-Key": idem or key()})


async def bookings_of(http: httpx.AsyncClient, reference: str) -> list[dict[str, Any]]:
    answer = await http.get("/v1/bookings", params={"reference": reference})
    assert answer.status_code == 200
    found: list[dict[str, Any]] = answer.json()["bookings"]
    return found


async def test_a_repeated_key_answers_the_first_answer_and_books_once(
    carrier: StandInProcess,
) -> None:
    body = booking("de")
    async with carrier.client() as http:
        idem = key()
        first = await book(http, body, idem)
        again = await book(http, body, idem)
        assert first.status_code == again.status_code == 201
        assert first.json() == again.json()
        assert first.json()["carrier"] == "dhl" and first.json()["status"] == "booked"
        assert again.headers["idempotent-replayed"] == "true"
        assert len(await bookings_of(http, body["reference"])) == 1


async def test_racing_requests_with_one_key_book_once(carrier: StandInProcess) -> None:
    body = booking("FR")
    async with carrier.client(timeout=30) as http:
        idem = key()
        answers = await asyncio.gather(*(book(http, body, idem) for _ in range(8)))
        assert {a.status_code for a in answers} == {201}
        assert len({a.json()["booking_id"] for a in answers}) == 1
        assert (await bookings_of(http, body["reference"]))[0]["carrier"] == "colissimo"
        assert len(await bookings_of(http, body["reference"])) == 1


async def test_an_undeliverable_address_is_a_definite_422_and_books_nothing(
    carrier: StandInProcess,
) -> None:
    async with carrier.client() as http:
        for body, why in (
            (booking("JP"), "country JP is not served"),
            (booking("DE", "00000"), "postal code '00000' is not deliverable"),
        ):
            refused = await book(http, body)
            assert refused.status_code == 422
            assert refused.json()["status"] == "undeliverable"
            assert why in refused.json()["reason"]
            assert await bookings_of(http, body["reference"]) == []


async def test_a_key_with_another_body_is_refused_and_a_missing_key_is_a_400(
    carrier: StandInProcess,
) -> None:
    async with carrier.client() as http:
        idem = key()
        assert (await book(http, booking(), idem)).status_code == 201
        other = await book(http, booking(), idem)
        assert other.status_code == 422 and "different request" in other.json()["error"]
        missing = await http.post("/v1/bookings", json=booking())
        assert missing.status_code == 400 and "Idempotency-Key" in missing.json()["error"]
        bad = await http.post(
            "/v1/bookings", json={"reference": "o"}, headers={"Idempotency-Key": key()}
        )
        assert bad.status_code == 422 and "address" in bad.json()["error"]


async def test_cancel_and_list_bookings_by_status(carrier: StandInProcess) -> None:
    async with carrier.client() as http:
        kept, cancelled = booking("NL"), booking("US")
        kept_id = (await book(http, kept)).json()["booking_id"]
        gone_id = (await book(http, cancelled)).json()["booking_id"]
        for _ in range(2):  # cancelling a cancelled booking under a new key: the same answer
            answer = await http.post(
                f"/v1/bookings/{gone_id}/cancel", headers={"Idempotency-Key": key()}
            )
            assert answer.status_code == 200
            assert answer.json() == {"booking_id": gone_id, "status": "cancelled"}
        unknown = await http.post("/v1/bookings/nope/cancel", headers={"Idempotency-Key": key()})
        assert unknown.status_code == 404 and "nope" in unknown.json()["error"]
        booked = (await http.get("/v1/bookings", params={"status": "booked"})).json()
        gone = (await http.get("/v1/bookings", params={"status": "cancelled"})).json()
        assert [b["booking_id"] for b in booked["bookings"]] == [kept_id]
        assert gone["bookings"] == [
            {
                "booking_id": gone_id,
                "reference": cancelled["reference"],
                "status": "cancelled",
                "carrier": "ups",
            }
        ]
        wrong = await http.get("/v1/bookings", params={"status": "lost"})
        assert wrong.status_code == 422


async def test_faults_refuse_before_and_delay_after_the_booking(carrier: StandInProcess) -> None:
    async with carrier.client(timeout=10) as http:
        carrier.faults(failure_rate=1.0)
        body = booking()
        refused = await book(http, body)
        assert refused.status_code == 503
        carrier.faults(failure_rate=0)
        assert await bookings_of(http, body["reference"]) == []
        carrier.faults(latency_ms=3000)
        idem = key()
        with pytest.raises(httpx.TimeoutException):
            await http.post(
                "/v1/bookings", json=body, headers={"Idempotency-Key": idem}, timeout=0.5
            )
        carrier.faults(latency_ms=0)
        assert len(await bookings_of(http, body["reference"])) == 1  # booked all the same
        retry = await book(http, body, idem)
        assert retry.status_code == 201 and retry.headers["idempotent-replayed"] == "true"
        assert len(await bookings_of(http, body["reference"])) == 1


async def test_carrier_countries_sets_where_it_delivers(
    tmp_path: Path, database_url: Callable[[str], str]
) -> None:
    env = {"CARRIER_COUNTRIES": "JP,DE"}
    with running_standin("carrier", tmp_path / "var", database_url("carrier"), env) as c:
        async with c.client() as http:
            japan = await book(http, booking("JP"))
            assert japan.status_code == 201 and japan.json()["carrier"] == "dhl-express"
            assert (await book(http, booking("FR"))).status_code == 422


def test_a_bad_carrier_countries_stops_it_with_one_line() -> None:
    env = {**os.environ, "CARRIER_COUNTRIES": "DE,france", "HTTP_PORT": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "services.carrier"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "CARRIER_COUNTRIES" in lines[0] and "'france'" in lines[0]
