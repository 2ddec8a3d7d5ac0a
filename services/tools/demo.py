"""The main job: broker, topics, the five services (and the payment provider and carrier
stand-ins they call), then a mix of orders down every path of the saga, a table of outcomes
and a check of the invariants, the provider's ledger and the carrier's bookings included.
`choreo demo` runs this."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from dataclasses import replace

from events.auth import local_operator_headers, local_stack_auth, operator_bearer
from events.cli.errors import CliError
from events.codec import AvroCodec
from events.encoding import make_codec
from events.kafka import KafkaConnection
from events.publisher import Draft, publish
from events.settings import PlatformSettings
from events.supervisor import load_manifest, stop
from services.saga_check import (
    SERVICEABLE,
    UNSERVICEABLE,
    Api,
    World,
    cancel_draft,
    check_invariants,
    order_body,
    place_http,
    placed_draft,
    seed,
    statuses,
    wait_for,
)
from services.tools.registry import schema_env
from services.tools.startup import (
    DEPENDENCY_URL_SETTINGS,
    broker_and_topics,
    dashboard_url,
    dependency_urls,
    start_services,
)

# path -> the terminal outcomes it may end in ("CANCELLED/payments" = status/failed step)
EXPECTED = {
    "success": {"COMPLETED"},
    "out of stock": {"REJECTED/inventory"},
    "insufficient funds": {"CANCELLED/payments"},
    "unserviceable address": {"CANCELLED/shipping"},
    "customer cancel": {"CANCELLED/customer", "COMPLETED"},  # a cancel can lose the race
}


async def drive(
    world: World, codec: AvroCodec, kafka: KafkaConnection, api: Api, per_path: int
) -> None:
    await seed(
        world,
        codec,
        kafka,
        api,
        stock={"widget": per_path * 4 + 10, "rare": 3},
        deposits={"rich": 10_000_000, "poor": 1_000},
        prices={"widget": 1500, "rare": 100},  # the platform's: orders charges these
    )
    events: list[Draft] = []
    for i in range(per_path):
        via_http = i % 2 == 0
        plan = [
            ("success", order_body(world, "rich", [("widget", 1, 1500)], SERVICEABLE)),
            ("out of stock", order_body(world, "rich", [("rare", 100, 100)], SERVICEABLE)),
            ("insufficient funds", order_body(world, "poor", [("widget", 1)], SERVICEABLE)),
            (
                "unserviceable address",
                order_body(world, "rich", [("widget", 1, 1500)], UNSERVICEABLE),
            ),
        ]
        for path, body in plan:
            if via_http:
                await place_http(world, api, path, body)
            else:
                events.append(placed_draft(world, path, body))
        cancel = order_body(world, "rich", [("widget", 1, 1500)], SERVICEABLE)
        if via_http:
            oid = await place_http(world, api, "customer cancel", cancel)
            events.append(cancel_draft(oid))
        else:
            events.append(placed_draft(world, "customer cancel", cancel))
            events.append(cancel_draft(cancel["order_id"]))
    await publish(codec, kafka, events, producer="choreo-demo")


def outcome(order: dict[str, object]) -> str:
    status = str(order["status"])
    if status == "CANCELLED":
        return f"CANCELLED/{order['failed_step'] or 'customer'}"
    if status == "REJECTED":
        return f"REJECTED/{order['failed_step']}"
    return status


async def run(
    codec: AvroCodec,
    kafka: KafkaConnection,
    per_path: int,
    deadline_s: float,
    headers: dict[str, str] | None = None,
    dependencies: bool = False,
) -> int:
    """``headers``: an operator's token for the services' APIs; ``dependencies``: payments
    and shipping call the stand-ins, whose ledger and bookings are checked too."""
    api = Api(headers=headers)
    world = World()
    try:
        started = time.monotonic()
        await drive(world, codec, kafka, api, per_path)
        total = len(world.orders)
        print(f"placed {total} orders ({per_path} per path), half over HTTP, half as events")

        last = [-1]

        async def all_terminal() -> bool:
            rows = await statuses(world, api)
            done = sum(1 for r in rows.values() if r["status"] != "PENDING")
            if done != last[0]:
                rate = done / max(time.monotonic() - started, 1e-9)
                print(f"  {done}/{total} orders ended  ({rate:.0f}/s)", flush=True)
                last[0] = done
            return done == total

        await wait_for(all_terminal, deadline_s, "every order to end")
        problems = await _settled_invariants(world, api, 30, dependencies)
        rows = await statuses(world, api)
        _print_table(world, rows)
        for path, oid in sorted((p, o) for o, p in world.orders.items()):
            allowed = EXPECTED[path]
            if outcome(rows[oid]) not in allowed:
                problems.append(f"{path} order {oid} ended {outcome(rows[oid])}")
        print()
        if problems:
            print(f"INVARIANTS VIOLATED ({len(problems)}):")
            for p in problems:
                print(f"  - {p}")
            return 1
        print(
            "invariants hold: stock on hand + reserved = seeded - shipped; balance + captured"
            " - refunded = deposited;\n  one terminal state per order, at most one net capture;"
            " every COMPLETED order shipped once and notified."
        )
        if dependencies:
            print(
                "  the provider's ledger = payments' captures - refunds per customer; one live"
                " booking at the carrier per COMPLETED order."
            )
        return 0
    finally:
        await api.close()


async def _settled_invariants(
    world: World, api: Api, deadline_s: float, dependencies: bool
) -> list[str]:
    """Compensations finish after the terminal state: re-check until clean or the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        problems = await check_invariants(world, api, dependencies)
        if not problems or time.monotonic() > end:
            return problems
        await asyncio.sleep(0.5)  # poll interval while compensations settle


def _print_table(world: World, rows: dict[str, dict[str, object]]) -> None:
    counts: dict[str, Counter[str]] = {p: Counter() for p in EXPECTED}
    for oid, path in world.orders.items():
        counts[path][outcome(rows[oid])] += 1
    columns = sorted({o for c in counts.values() for o in c})
    width = max(len(p) for p in EXPECTED) + 2
    print()
    print("path".ljust(width) + "".join(c.rjust(20) for c in columns) + "    expected")
    for path, c in counts.items():
        cells = "".join(str(c.get(col, 0)).rjust(20) for col in columns)
        print(path.ljust(width) + cells + "    " + " or ".join(sorted(EXPECTED[path])))


def run_demo(
    settings: PlatformSettings,
    orders_per_path: int,
    deadline: float,
    keep: bool,
    secure: bool = False,
) -> int:
    """Start broker, topics and services (on the secured broker with ``secure``), drive
    ``orders_per_path`` orders down each path within ``deadline`` seconds, print the
    outcomes and check the invariants."""
    kafka, catalogue, service_env = broker_and_topics(settings, secure)
    schemas = schema_env(settings, catalogue)  # SCHEMA_FORMAT=registry: registry, catalogue
    specs = load_manifest()
    try:
        auth_env, secret = local_stack_auth(settings.var_dir, os.environ)
        env = {**auth_env, **schemas}
        start_services(specs, settings, kafka, deadline_s=90, env=env, service_env=service_env)
        print("services ready: " + ", ".join(f"{s.name}:{s.port}" for s in specs))
        query = next((s for s in specs if s.name == "query"), None)
        if query is not None and secret is not None:
            print(f"dashboard: {dashboard_url(query.port, secret)} (--keep to leave it up)")
        ttl = deadline + 600  # the whole run
        headers = (
            operator_bearer(secret, ttl)
            if secret is not None
            else local_operator_headers(settings.var_dir, os.environ, ttl)
        )
        # The demo's own events in the services' format, from the registry they use.
        encoding = settings.schema_encoding()
        if schemas:
            encoding = replace(encoding, registry_url=schemas["SCHEMA_REGISTRY_URL"])
        codec = make_codec(catalogue, encoding)
        # The stand-ins' books are checked when the services call them (not a real provider
        # named in the environment).
        dependencies = len(dependency_urls(specs)) == len(DEPENDENCY_URL_SETTINGS)
        if dependencies:
            print(
                "payments and shipping call the payment provider (:8108) and the carrier "
                "(:8109); inject faults with PUT /admin/faults on either (see the README)"
            )
        return asyncio.run(run(codec, kafka, orders_per_path, deadline, headers, dependencies))
    except TimeoutError as exc:  # the orders did not end in time
        raise CliError(str(exc)) from None
    finally:
        if not keep:
            stop(specs, var_dir=settings.var_dir)
            stop_broker = "choreo broker down" + (" --secure" if secure else "")
            print(f"services stopped (the broker keeps running: `{stop_broker}`)")
            if schemas:
                print("the schema registry keeps running: `choreo down` stops it")
