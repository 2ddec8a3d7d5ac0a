"""The payment provider stand-in as a real process over real HTTP: idempotency keys (a repeat
answers the first answer and acts once, also when requests race), its rules (declines,
captures, voids, refunds bounded by the capture), its ledger, and the faults it can be told
to show (down, a failure rate, latency after the effect is committed)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.external import StandInProcess, running_standin
from tests.support import eventually

pytestmark = pytest.mark.integration


def key() -> str:
    return str(uuid.uuid4())


def customer() -> str:
    return f"c-{uuid.uuid4().hex[:8]}"


async def authorise(
    http: httpx.AsyncClient, who: str, cents: int, idem: str | None = None
) -> httpx.Response:
    body = {"reference": f"o-{uuid.uuid4().hex[:8]}", "customer_id": who, "amount_cents": cents}
    return await http.post(
        "/v1/authorisations", json=body, headers={"Idempotency-Key": idem or key()}
    )


async def captured(http: httpx.AsyncClient, who: str, cents: int) -> str:
    """A capture of ``cents`` for ``who``; its id."""
    auth = await authorise(http, who, cents)
    assert auth.status_code == 201, auth.text
    cap = await http.post(
        f"/v1/authorisations/{auth.json()['authorisation_id']}/capture",
        json={"amount_cents": cents},
        headers={"Idempotency-Key": key()},
    )
    assert cap.status_code == 200, cap.text
    capture_id: str = cap.json()["capture_id"]
    return capture_id


async def ledger(http: httpx.AsyncClient, who: str) -> dict[str, Any]:
    answer = await http.get(f"/v1/ledger/{who}")
    assert answer.status_code == 200
    row: dict[str, Any] = answer.json()
    return row


async def test_a_repeated_key_answers_the_first_answer_and_charges_once(
    provider: StandInProcess,
) -> None:
    who = customer()
    async with provider.client() as http:
        auth = (await authorise(http, who, 700)).json()
        path = f"/v1/authorisations/{auth['authorisation_id']}/capture"
        headers = {"Idempotency-Key": key()}
        first = await http.post(path, json={"amount_cents": 700}, headers=headers)
        again = await http.post(path, json={"amount_cents": 700}, headers=headers)
        assert first.status_code == again.status_code == 200
        assert first.json() == again.json()
        assert first.json()["status"] == "captured"
        assert "idempotent-replayed" not in first.headers
        assert again.headers["idempotent-replayed"] == "true"
        assert await ledger(http, who) == {
            "customer_id": who,
            "captured_cents": 700,
            "refunded_cents": 0,
        }


async def test_racing_requests_with_one_key_act_once(provider: StandInProcess) -> None:
    who = customer()
    async with provider.client(timeout=30) as http:
        capture_id = await captured(http, who, 1000)
        one_key = key()
        answers = await asyncio.gather(
            *(
                http.post(
                    f"/v1/captures/{capture_id}/refunds",
                    json={"amount_cents": 100},
                    headers={"Idempotency-Key": one_key},
                )
                for _ in range(8)
            )
        )
        assert {a.status_code for a in answers} == {201}
        assert len({a.json()["refund_id"] for a in answers}) == 1
        assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == 7
        assert (await ledger(http, who))["refunded_cents"] == 100

        auth_key = key()
        auths = await asyncio.gather(*(authorise(http, who, 5, auth_key) for _ in range(6)))
        # each call made its own reference, so only the first body owns the key
        assert sorted(a.status_code for a in auths).count(201) == 1
        assert all(
            a.json() == {"error": "this Idempotency-Key was used for a different request"}
            for a in auths
            if a.status_code != 201
        )


async def test_a_key_with_another_body_is_refused_and_a_missing_key_is_a_400(
    provider: StandInProcess,
) -> None:
    who = customer()
    async with provider.client() as http:
        idem = key()
        assert (await authorise(http, who, 100, idem)).status_code == 201
        other = await authorise(http, who, 101, idem)
        assert other.status_code == 422
        assert "different request" in other.json()["error"]
        body = {"reference": "o", "customer_id": who, "amount_cents": 1}
        for headers in ({}, {"Idempotency-Key": ""}, {"Idempotency-Key": "k" * 256}):
            missing = await http.post("/v1/authorisations", json=body, headers=headers)
            assert missing.status_code == 400
            assert "Idempotency-Key" in missing.json()["error"]


async def test_bad_input_is_a_one_line_json_4xx(provider: StandInProcess) -> None:
    async with provider.client() as http:
        headers = {"Idempotency-Key": key(), "content-type": "application/json"}
        for content in (
            b"{not json",
            b'{"reference": "o", "customer_id": "c", "amount_cents": -1}',
            b'{"reference": "o", "customer_id": "c", "amount_cents": "NaN"}',
            b'{"reference": "o\\u0000", "customer_id": "c", "amount_cents": 1}',
            b"[]",
        ):
            answer = await http.post("/v1/authorisations", content=content, headers=headers)
            assert answer.status_code == 422, content
            assert "\n" not in answer.json()["error"]
        huge = b'{"reference": "' + b"x" * 200_000 + b'"}'
        answer = await http.post("/v1/authorisations", content=huge, headers=headers)
        assert answer.status_code == 413
        unknown = await http.post(
            "/v1/authorisations/nope/capture", json={"amount_cents": 1}, headers=headers
        )
        assert unknown.status_code == 404 and "nope" in unknown.json()["error"]


async def test_declined_customers_and_amounts_over_the_limit_get_a_402(
    tmp_path: Path, database_url: Callable[[str], str]
) -> None:
    env = {"PROVIDER_MAX_AMOUNT_CENTS": "5000", "PROVIDER_DECLINED_CUSTOMERS": "blocked"}
    with running_standin("provider", tmp_path / "var", database_url("provider"), env) as p:
        async with p.client() as http:
            over = await authorise(http, customer(), 5001)
            assert over.status_code == 402
            assert over.json()["status"] == "declined" and "5000" in over.json()["reason"]
            assert (await authorise(http, customer(), 5000)).status_code == 201
            assert (await authorise(http, "blocked", 1)).status_code == 402
            who = customer()
            listed = await http.put("/admin/declined", json={"customers": [who]})
            assert listed.json() == {"customers": [who]}
            idem = key()
            declined = await authorise(http, who, 1, idem)
            assert declined.status_code == 402
            assert declined.json()["reason"]
            # a decline is a definite answer: the key keeps it after the list changes
            await http.put("/admin/declined", json={"customers": []})
            again = await http.post(
                "/v1/authorisations",
                json={
                    "reference": declined.json()["reference"],
                    "customer_id": who,
                    "amount_cents": 1,
                },
                headers={"Idempotency-Key": idem},
            )
            assert (again.status_code, again.json()) == (402, declined.json())
            assert (await authorise(http, "blocked", 1)).status_code == 201


async def test_captures_voids_and_refunds_follow_the_rules(provider: StandInProcess) -> None:
    who = customer()
    async with provider.client() as http:

        async def post(path: str, body: dict[str, Any] | None = None) -> httpx.Response:
            return await http.post(path, json=body or {}, headers={"Idempotency-Key": key()})

        voided = (await authorise(http, who, 300)).json()["authorisation_id"]
        assert (await post(f"/v1/authorisations/{voided}/void")).json()["status"] == "voided"
        assert (await post(f"/v1/authorisations/{voided}/void")).status_code == 200
        late = await post(f"/v1/authorisations/{voided}/capture", {"amount_cents": 300})
        assert late.status_code == 409 and "voided" in late.json()["error"]

        auth = (await authorise(http, who, 500)).json()["authorisation_id"]
        over = await post(f"/v1/authorisations/{auth}/capture", {"amount_cents": 501})
        assert over.status_code == 422
        cap = await post(f"/v1/authorisations/{auth}/capture", {"amount_cents": 500})
        assert cap.status_code == 200
        twice = await post(f"/v1/authorisations/{auth}/capture", {"amount_cents": 500})
        assert twice.status_code == 409
        assert (await post(f"/v1/authorisations/{auth}/void")).status_code == 409

        capture_id = cap.json()["capture_id"]
        refunds = f"/v1/captures/{capture_id}/refunds"
        assert (await post(refunds, {"amount_cents": 300})).status_code == 201
        too_much = await post(refunds, {"amount_cents": 201})
        assert too_much.status_code == 422 and "exceed" in too_much.json()["error"]
        assert (await post(refunds, {"amount_cents": 200})).status_code == 201
        assert (await post(refunds, {"amount_cents": 1})).status_code == 422
        assert (await post("/v1/captures/nope/refunds", {"amount_cents": 1})).status_code == 404
        assert await ledger(http, who) == {
            "customer_id": who,
            "captured_cents": 500,
            "refunded_cents": 500,
        }


async def test_the_ledger_sums_captures_and_refunds_per_customer(provider: StandInProcess) -> None:
    a, b = customer(), customer()
    async with provider.client() as http:
        cap_a1 = await captured(http, a, 1000)
        await captured(http, a, 250)
        cap_b = await captured(http, b, 400)
        for capture_id, cents in ((cap_a1, 100), (cap_a1, 50), (cap_b, 400)):
            answer = await http.post(
                f"/v1/captures/{capture_id}/refunds",
                json={"amount_cents": cents},
                headers={"Idempotency-Key": key()},
            )
            assert answer.status_code == 201
        whole = (await http.get("/v1/ledger")).json()["customers"]
        assert whole[a] == {"captured_cents": 1250, "refunded_cents": 150}
        assert whole[b] == {"captured_cents": 400, "refunded_cents": 400}
        nobody = customer()
        assert nobody not in whole
        assert await ledger(http, nobody) == {
            "customer_id": nobody,
            "captured_cents": 0,
            "refunded_cents": 0,
        }


async def test_down_answers_503_at_once_and_does_nothing(provider: StandInProcess) -> None:
    who = customer()
    async with provider.client() as http:
        assert provider.faults(down=True)["down"] is True
        idem = key()
        refused = await authorise(http, who, 100, idem)
        assert refused.status_code == 503 and "unavailable" in refused.json()["error"]
        assert (await http.get("/v1/ledger")).status_code == 503
        # the probes, the metrics and the admin are never faulted
        for path in ("/health", "/ready", "/metrics", "/admin/faults"):
            assert (await http.get(path)).status_code == 200, path
        provider.faults(down=False)
        # nothing was done under the key: it acts now, for the first time
        first = await http.post(
            "/v1/authorisations",
            json={**_body(refused.request), "customer_id": who},
            headers={"Idempotency-Key": idem},
        )
        assert first.status_code == 201
        assert "idempotent-replayed" not in first.headers


def _body(request: httpx.Request) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(request.content)
    return body


async def test_down_for_a_while_comes_back_by_itself(provider: StandInProcess) -> None:
    async with provider.client() as http:
        shown = provider.faults(down_for_s=1.5)
        assert shown["down"] is True and 0 < shown["down_for_s"] <= 1.5
        refused = await authorise(http, customer(), 1)
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) >= 1

        async def up() -> bool:
            return (await authorise(http, customer(), 1)).status_code == 201

        await eventually(up, deadline_s=15, poll_s=0.2, what="the provider back up")
        assert (await http.get("/admin/faults")).json()["down"] is False


async def test_a_failure_rate_refuses_that_share_of_requests(provider: StandInProcess) -> None:
    async with provider.client() as http:
        provider.faults(failure_rate=1.0)
        statuses = {(await authorise(http, customer(), 1)).status_code for _ in range(5)}
        assert statuses == {503}
        provider.faults(failure_rate=0.5)
        seen = [(await authorise(http, customer(), 1)).status_code for _ in range(60)]
        assert set(seen) == {201, 503}  # 60 draws at a half: both, but for 2 in 2**59
        provider.faults(failure_rate=0)
        assert (await authorise(http, customer(), 1)).status_code == 201


async def test_latency_comes_after_the_commit_so_a_timeout_hides_a_charge(
    provider: StandInProcess,
) -> None:
    who = customer()
    async with provider.client(timeout=10) as http:
        auth = (await authorise(http, who, 900)).json()["authorisation_id"]
        provider.faults(latency_ms=3000)
        path = f"/v1/authorisations/{auth}/capture"
        headers = {"Idempotency-Key": key()}
        with pytest.raises(httpx.TimeoutException):
            await http.post(path, json={"amount_cents": 900}, headers=headers, timeout=0.5)
        provider.faults(latency_ms=0)
        # the capture happened although the client saw none: the ledger shows it, and the
        # retry with the same key gets the first answer rather than a second charge
        assert (await ledger(http, who))["captured_cents"] == 900
        retry = await http.post(path, json={"amount_cents": 900}, headers=headers)
        assert retry.status_code == 200 and retry.headers["idempotent-replayed"] == "true"
        assert (await ledger(http, who))["captured_cents"] == 900


async def test_keys_survive_a_restart(provider: StandInProcess) -> None:
    who = customer()
    async with provider.client() as http:
        idem = key()
        first = await authorise(http, who, 42, idem)
    provider.stop(kill=True)
    provider.start()
    async with provider.client() as http:
        again = await http.post(
            "/v1/authorisations", json=_body(first.request), headers={"Idempotency-Key": idem}
        )
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"


async def test_metrics_count_requests_by_outcome(provider: StandInProcess) -> None:
    async with provider.client() as http:
        idem = key()
        first = await authorise(http, customer(), 1, idem)
        await http.post(
            "/v1/authorisations", json=_body(first.request), headers={"Idempotency-Key": idem}
        )
        provider.faults(down=True)
        await authorise(http, customer(), 1)
        provider.faults(down=False)
        text = (await http.get("/metrics")).text
    for outcome in ("done", "replayed", "fault"):
        assert f'outcome="{outcome}"' in text and 'standin="provider"' in text


async def test_racing_captures_under_different_keys_capture_once(
    provider: StandInProcess,
) -> None:
    who = customer()
    async with provider.client(timeout=30) as http:
        auth = (await authorise(http, who, 800)).json()["authorisation_id"]
        answers = await asyncio.gather(
            *(
                http.post(
                    f"/v1/authorisations/{auth}/capture",
                    json={"amount_cents": 800},
                    headers={"Idempotency-Key": key()},
                )
                for _ in range(6)
            )
        )
        assert sorted(a.status_code for a in answers) == [200] + [409] * 5
        assert (await ledger(http, who))["captured_cents"] == 800


async def test_a_request_is_a_server_span_in_the_callers_trace(
    tmp_path: Path, database_url: Callable[[str], str]
) -> None:
    env = {"TRACE_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    trace_id = uuid.uuid4().hex
    with running_standin("provider", tmp_path / "var", database_url("provider"), env) as p:
        async with p.client() as http:
            answer = await http.post(
                "/v1/authorisations",
                json={"reference": "o", "customer_id": customer(), "amount_cents": 1},
                headers={"Idempotency-Key": key(), "traceparent": f"00-{trace_id}-{'1' * 16}-01"},
            )
            assert answer.status_code == 201

            def traced() -> bool:
                text = p.log_file.read_text()
                return f'"trace_id": "0x{trace_id}"' in text and '"POST /v1/authorisations"' in text

            await eventually(traced, deadline_s=30, poll_s=0.2, what="the provider's span")
    assert '"kind": "SpanKind.SERVER"' in p.log_file.read_text()
