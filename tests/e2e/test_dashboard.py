"""The saga dashboard in a real browser while a demo-like mix of orders runs through the stack.

Headless Chromium from Debian's packages (``make browser``; ``CHOREO_CHROMIUM`` names another
binary) driven by Playwright. What the page shows is checked against the query API: the live
counts, one order's timeline (steps, event types, services, compensations, trace link) and
status, the stuck list; and the narrow (380 px) layout must not overflow sideways.

Screenshots (wide and narrow, full page) are written to ``test-output/dashboard/`` at the
repository root (git-ignored), or under ``$CHOREO_TEST_OUTPUT/dashboard/`` when that is set.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from events.kafka import KafkaConnection
from events.settings import REPO_ROOT
from events.supervisor import start, wait_ready
from services.saga_check import SERVICEABLE, World, order_body, place_http
from services.tools.demo import drive
from tests.e2e.conftest import Stack
from tests.e2e.test_saga import settle
from tests.support import eventually
from tests.tokens import operator_headers, operator_token

pytestmark = pytest.mark.e2e

CHROMIUM = Path(os.environ.get("CHOREO_CHROMIUM", "/usr/bin/chromium"))
OUTPUT = Path(os.environ.get("CHOREO_TEST_OUTPUT", REPO_ROOT / "test-output")) / "dashboard"
COMPENSATIONS = {"StockReleased", "PaymentRefunded", "ShipmentCancelled", "OrderCancelled"}
PER_PATH = 2  # 5 paths: 10 orders, half over HTTP (traced), half as events
SAGA_DEADLINE_S = 12  # short, so one order can be seen stuck while shipping is down
WAIT_MS = 60_000


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
async def query(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    base = f"http://127.0.0.1:{stack.spec('query').port}"
    async with httpx.AsyncClient(base_url=base, timeout=10, headers=operator_headers()) as http:
        yield http


def restart_with(stack: Stack, env: dict[str, str], *names: str) -> None:
    """Restarts some of the stack's services with extra settings."""
    stack.stop(*names)
    specs = [stack.spec(n) for n in names]
    start(specs, var_dir=stack.var_dir, bootstrap=stack.bootstrap, env={**stack.env, **env})
    wait_ready(specs, var_dir=stack.var_dir, deadline_s=90)


def stuck_detection() -> bool:
    """Whether the orders service reports stuck sagas (and takes a saga deadline)."""
    settings = importlib.import_module("services.orders.app").Settings
    return "saga_deadline_s" in settings.model_fields


async def watch(page: Page, errors: list[str]) -> None:
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))

    def console(msg: Any) -> None:
        # An HTTP error the page handles (503 from a missing analytics) is logged by Chromium
        # as "Failed to load resource"; anything else on the console is the page's fault.
        if msg.type == "error" and "Failed to load resource" not in msg.text:
            errors.append(f"console {msg.type}: {msg.text}")

    page.on("console", console)


def count(page: Page, testid: str) -> Any:
    return page.get_by_test_id(testid).get_by_test_id("count-value")


async def shown_steps(page: Page) -> list[dict[str, str]]:
    return await page.get_by_test_id("timeline-step").evaluate_all(
        """els => els.map(e => ({
            event_type: e.dataset.eventType, service: e.dataset.service,
            event_id: e.dataset.eventId, occurred_at: e.dataset.occurredAt,
            kind: e.dataset.kind, text: e.innerText}))"""
    )


async def timeline_matches(page: Page, query: httpx.AsyncClient, order_id: str) -> list[dict]:
    """Waits until the page shows the order's timeline as the API has it; returns the API's."""
    api: list[dict] = []
    shown: list[dict] = []

    async def same() -> bool:
        api[:] = (await query.get(f"/api/v1/orders/{order_id}/timeline")).json()["events"]
        shown[:] = await shown_steps(page)
        keys = ("event_type", "service", "event_id", "occurred_at")
        return [{k: s[k] for k in keys} for s in shown] == [{k: e[k] for k in keys} for e in api]

    try:
        await eventually(same, deadline_s=30, poll_s=0.5, what="the page's timeline")
    except AssertionError:
        pytest.fail(f"timeline differs:\npage {shown}\napi  {api}")
    for step, event in zip(shown, api, strict=True):
        # What a person reads, not only the data attributes.
        assert event["event_type"] in step["text"] and event["service"] in step["text"], step
        is_compensation = event["event_type"] in COMPENSATIONS
        assert (step["kind"] == "compensation") == is_compensation, step
        assert ("compensation" in step["text"]) == is_compensation, step
    deltas = await page.get_by_test_id("step-delta").all_inner_texts()
    assert deltas[0] == "start" and all(re.match("^[+\u2212]", d) for d in deltas[1:]), deltas
    return api


async def order_matches(page: Page, query: httpx.AsyncClient, order_id: str) -> dict:
    order = (await query.get(f"/api/v1/orders/{order_id}")).json()
    detail = page.get_by_test_id("order-detail")
    await expect(detail.get_by_test_id("order-id")).to_contain_text(order_id)
    status = detail.get_by_test_id("order-status").get_by_test_id("status")
    await expect(status).to_have_attribute("data-status", order["status"], timeout=WAIT_MS)
    await expect(status).to_contain_text(order["status"].capitalize())
    if order["reason"]:
        await expect(detail.get_by_test_id("order-reason")).to_contain_text(order["reason"])
    return order


async def trace_links_match(page: Page, query: httpx.AsyncClient, events: list[dict]) -> None:
    template = (await query.get("/dashboard/config")).json()["trace_url_template"]
    traces = {e["trace_id"] for e in events if e["trace_id"]}
    assert traces, "an order placed over HTTP with tracing on should carry a trace id"
    links = page.get_by_test_id("order-detail").get_by_test_id("trace-link")
    await expect(links).to_have_count(len(traces))
    for link in await links.all():
        trace_id = await link.get_attribute("data-trace-id")
        assert trace_id in traces
        assert await link.get_attribute("href") == template.replace("{trace_id}", trace_id)


async def counts_match(page: Page, query: httpx.AsyncClient) -> None:
    """Waits until the page's counts are the API's (both read afresh on every try)."""
    seen: dict[str, dict[str, str]] = {}

    async def same() -> bool:
        stats = (await query.get("/api/v1/stats")).json()
        want = {f"count-{s}": str(n) for s, n in stats["by_status"].items()}
        want.update({"count-total": str(stats["total"]), "count-stuck": str(stats["stuck"])})
        shown = {testid: await count(page, testid).inner_text() for testid in want}
        seen.update(api=want, page=shown)
        return shown == want

    try:
        await eventually(same, deadline_s=20, poll_s=0.5, what="the page's counts")
    except AssertionError:
        pytest.fail(f"counts differ: {seen}")


async def no_sideways_overflow(page: Page) -> None:
    sizes = await page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert sizes[0] <= sizes[1], f"the page scrolls sideways: {sizes}"
    for testid in ("counts", "analytics", "recent-orders", "stuck-orders", "order-detail"):
        box = await page.get_by_test_id(testid).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= sizes[1], testid


async def test_the_dashboard_follows_the_sagas_live(
    stack: Stack, browser: Browser, query: httpx.AsyncClient
):
    OUTPUT.mkdir(parents=True, exist_ok=True)
    analytics = any(s.name == "analytics" for s in stack.specs)
    if analytics:
        stack.start("analytics")
    extra = {"TRACE_EXPORTER": "console"}  # orders starts one trace per order: links to check
    if analytics:
        extra["ANALYTICS_URL"] = f"http://127.0.0.1:{stack.spec('analytics').port}"
    stuck = stuck_detection()
    if stuck:
        extra.update(SAGA_DEADLINE_S=str(SAGA_DEADLINE_S), STUCK_SCAN_INTERVAL_S="1")
    restart_with(stack, extra, "orders", "query")

    errors: list[str] = []
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await watch(page, errors)
    base = str(query.base_url).rstrip("/")
    await page.goto(f"{base}/")  # redirects to /dashboard
    await expect(page).to_have_url(re.compile(r"/dashboard$"))
    await expect(page.get_by_role("heading", level=1)).to_contain_text("saga dashboard")
    # No token in the URL: the page asks for one, and polls with it once given.
    await expect(page.get_by_test_id("token-form")).to_be_visible(timeout=WAIT_MS)
    await expect(page.get_by_test_id("token-why")).to_contain_text("operator token")
    await page.get_by_test_id("token-input").fill(operator_token())
    await page.get_by_role("button", name="Use token").click()
    await expect(page.get_by_test_id("token-form")).to_be_hidden()
    for role in ("banner", "main", "contentinfo"):  # landmarks, for screen-reader users
        await expect(page.get_by_role(role)).to_have_count(1)
    for name in ("Orders by state", "Analytics", "Stuck orders", "Recent orders", "Order timeline"):
        await expect(page.get_by_role("region", name=name)).to_be_visible()
    await expect(page.get_by_test_id("live-status")).to_contain_text("live", timeout=WAIT_MS)
    await expect(count(page, "count-total")).to_have_text(re.compile(r"^\d+$"), timeout=WAIT_MS)
    before = int(await count(page, "count-total").inner_text())

    # The mix of orders runs while the page is open; the counts move with it.
    world = World()
    await drive(world, stack.codec, KafkaConnection(stack.bootstrap), stack.api, per_path=PER_PATH)
    placed = len(world.orders)
    await page.wait_for_function(
        """n => Number(document.querySelector(
            '[data-testid=count-total] [data-testid=count-value]').textContent) >= n""",
        arg=before + placed,
        timeout=WAIT_MS,
    )
    rows = await settle(world, stack)
    await counts_match(page, query)
    await expect(page.get_by_test_id("order-row")).to_have_count(min(placed, 20), timeout=10_000)

    if analytics:
        section = page.get_by_test_id("analytics")
        await expect(section).to_have_attribute("data-state", "ok", timeout=WAIT_MS)

        async def all_counted() -> bool:
            body = (await query.get("/api/v1/analytics", params={"window": "hour"})).json()
            return sum(w["placed"] for w in body.get("windows", [])) >= placed

        await eventually(all_counted, deadline_s=60, poll_s=0.5, what="analytics to count them")
        chart = page.get_by_test_id("chart-outcomes").locator("svg rect")
        await expect(chart.first).to_be_attached(timeout=WAIT_MS)
    else:
        await expect(page.get_by_test_id("analytics-status")).to_contain_text(
            "Analytics unavailable"
        )

    # One order with compensations, placed over HTTP (so traced): open it from the list.
    refunded = next(
        oid
        for oid, path in world.orders.items()
        if path == "unserviceable address" and rows[oid]["status"] == "CANCELLED"
    )
    await page.locator(f'[data-testid=order-row][data-order-id="{refunded}"]').click()
    await expect(page).to_have_url(re.compile(f"#order={refunded}$"))
    await order_matches(page, query, refunded)
    events = await timeline_matches(page, query, refunded)
    kinds = {e["event_type"] for e in events}
    assert {"PaymentRefunded", "StockReleased", "OrderCancelled"} <= kinds, kinds
    await trace_links_match(page, query, events)
    await expect(
        page.locator(f'[data-testid=order-row][data-order-id="{refunded}"]')
    ).to_have_attribute("aria-current", "true")
    if not stuck:
        await expect(page.get_by_test_id("no-stuck")).to_be_visible()
    await page.screenshot(path=OUTPUT / "wide.png", full_page=True)

    # Deep link to a completed order in a narrow window: one column, nothing sideways.
    completed = next(oid for oid, r in rows.items() if r["status"] == "COMPLETED")
    narrow = await browser.new_page(viewport={"width": 380, "height": 800})
    await watch(narrow, errors)
    # The token from the URL's fragment, which the page then drops from the address bar.
    await narrow.goto(f"{base}/dashboard#token={operator_token()}")
    await expect(narrow).to_have_url(re.compile(r"/dashboard$"))
    await narrow.evaluate("id => { location.hash = `order=${id}`; }", completed)
    await expect(narrow.get_by_test_id("token-form")).to_be_hidden()
    await order_matches(narrow, query, completed)
    await timeline_matches(narrow, query, completed)
    await expect(narrow.get_by_test_id("timeline-step").last).to_be_visible()
    await counts_match(narrow, query)
    await no_sideways_overflow(narrow)
    lists = await narrow.get_by_test_id("recent-orders").bounding_box()
    detail = await narrow.get_by_test_id("order-detail").bounding_box()
    assert lists and detail and detail["y"] >= lists["y"] + lists["height"], "not one column"
    await narrow.screenshot(path=OUTPUT / "narrow.png", full_page=True)

    if stuck:
        # Shipping down: a new order waits on it past the deadline and is listed stuck.
        stack.stop("shipping")
        oid = await place_http(
            world, stack.api, "stuck", order_body(world, "rich", [("widget", 1)], SERVICEABLE)
        )
        row = page.locator(f'[data-testid=stuck-row][data-order-id="{oid}"]')
        await expect(row).to_have_attribute("data-waiting-on", "shipping", timeout=WAIT_MS)
        listed = (await query.get("/api/v1/orders", params={"stuck": "true"})).json()["items"]
        assert [o["order_id"] for o in listed] == [oid]
        await counts_match(page, query)
        await row.click()
        await order_matches(page, query, oid)
        await expect(page.get_by_test_id("order-waiting-on")).to_contain_text("shipping")
        await timeline_matches(page, query, oid)
        await page.screenshot(path=OUTPUT / "stuck.png", full_page=True)

    # Services going away: the page says so instead of showing stale figures as live.
    if analytics:
        stack.stop("analytics")
        await expect(page.get_by_test_id("analytics")).to_have_attribute(
            "data-state", "unavailable", timeout=WAIT_MS
        )
        await expect(page.get_by_test_id("analytics-status")).to_contain_text("unavailable")
    stack.stop("query")
    await expect(page.get_by_test_id("live-status")).to_contain_text("offline", timeout=WAIT_MS)

    # The page never failed on its side; the screenshots are where the docstring says.
    assert not errors, errors
    assert (OUTPUT / "wide.png").stat().st_size > 0 and (OUTPUT / "narrow.png").stat().st_size > 0
    await asyncio.gather(page.close(), narrow.close())
