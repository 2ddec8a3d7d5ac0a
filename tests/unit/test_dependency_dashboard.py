"""The dashboard's view of the external systems' breakers: which services' /health it
reads, what it makes of their answers (httpx's MockTransport, no network), and the page's
hooks for it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from services.query.app import Settings
from services.query.breakers import BreakerWatch, parse_targets

STATIC = Path(__file__).resolve().parents[2] / "services" / "query" / "static"


def test_targets_are_name_url_pairs():
    assert parse_targets(" payments=http://127.0.0.1:8103/ , shipping=http://s:8104,") == [
        ("payments", "http://127.0.0.1:8103"),
        ("shipping", "http://s:8104"),
    ]
    assert parse_targets("") == []
    with pytest.raises(ValueError, match="'payments'"):
        parse_targets("payments")


def test_the_setting_is_refused_in_one_line_when_a_pair_is_bad():
    with pytest.raises(ValidationError, match="not name=http"):
        Settings(dependency_health_urls="payments=ftp://x")
    assert Settings().dependency_health_urls.startswith("payments=http://127.0.0.1:8103")


async def test_each_service_says_its_breakers_or_is_not_reached():
    def health(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host == "payments":
            body = {"status": "ok", "service": "payments", "dependencies": {"provider": "open"}}
            return httpx.Response(200, json=body)
        if host == "shipping":
            return httpx.Response(200, json={"status": "ok", "service": "shipping"})
        if host == "broken":
            return httpx.Response(200, text="<html>not json</html>")
        raise httpx.ConnectError("refused", request=request)

    watch = BreakerWatch(
        [
            ("payments", "http://payments:8103"),
            ("shipping", "http://shipping:8104"),
            ("broken", "http://broken:1"),
            ("gone", "http://gone:1"),
        ],
        transport=httpx.MockTransport(health),
    )
    try:
        found = {s.service: s for s in (await watch.read()).services}
    finally:
        await watch.aclose()
    assert found["payments"].reached and found["payments"].dependencies == {"provider": "open"}
    assert found["shipping"].reached and found["shipping"].dependencies == {}
    assert not found["broken"].reached and not found["gone"].reached


def test_the_page_shows_the_breakers_panel():
    html = (STATIC / "index.html").read_text()
    script = (STATIC / "dashboard.js").read_text()
    for hook in ("breakers", "breakers-status", "breakers-list"):
        assert f'data-testid="{hook}"' in html
        assert f'el("{hook}")' in script or hook == "breakers"
    assert "get(`${API}/dependencies`)" in script
    for state in ("closed", "half-open", "open"):
        assert f".breaker.b-{state}" in (STATIC / "dashboard.css").read_text()
