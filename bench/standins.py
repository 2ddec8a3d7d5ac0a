"""``python -m bench.standins``: how many requests a second the payment provider stand-in
answers over real HTTP: authorise + capture pairs under fresh idempotency keys, a fixed
number in flight, against its own database (SQLite in a temp dir unless ``--database-url``).

It tells whether the stand-in, rather than the saga, would set the pace of a run with the
providers in the path. CPU used by other processes (the machine's busy time minus this
process and the stand-in's) is printed beside the figure: above 0.25 cores it is noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from bench.cpu import machine_busy_s, process_s, self_s
from events.supervisor import ProcessSpec, start, stop, wait_ready
from infra.broker import free_ports


async def _pair(http: httpx.AsyncClient, slots: asyncio.Semaphore) -> None:
    async with slots:
        body = {"reference": str(uuid.uuid4()), "customer_id": "bench", "amount_cents": 100}
        auth = await http.post(
            "/v1/authorisations", json=body, headers={"Idempotency-Key": str(uuid.uuid4())}
        )
        auth.raise_for_status()
        capture = await http.post(
            f"/v1/authorisations/{auth.json()['authorisation_id']}/capture",
            json={"amount_cents": 100},
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
        capture.raise_for_status()


async def _load(
    url: str, pid: int, pairs: int, in_flight: int, warm_up: int
) -> tuple[float, float, float, float]:
    """Wall seconds of the timed pairs, and CPU seconds meanwhile: the stand-in's, this
    process's, everything else's."""
    limits = httpx.Limits(max_connections=in_flight)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        slots = asyncio.Semaphore(in_flight)
        await asyncio.gather(*(_pair(http, slots) for _ in range(warm_up)))
        busy, own, theirs = machine_busy_s(), self_s(), process_s(pid) or 0.0
        began = time.perf_counter()
        await asyncio.gather(*(_pair(http, slots) for _ in range(pairs)))
        wall = time.perf_counter() - began
        stand_in = (process_s(pid) or 0.0) - theirs
        mine = self_s() - own
        return wall, stand_in, mine, (machine_busy_s() - busy) - mine - stand_in


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.standins", description=__doc__)
    parser.add_argument("--pairs", type=int, default=1000, help="authorise + capture pairs")
    parser.add_argument("--in-flight", type=int, default=16, help="pairs in flight at once")
    parser.add_argument("--warm-up", type=int, default=50, help="pairs before the clock runs")
    parser.add_argument("--database-url", default="", help="the provider's; default SQLite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-standins-") as tmp:
        var_dir = Path(tmp)
        (port,) = free_ports(1)
        spec = ProcessSpec("provider", "services.provider", port, replicated=False)
        env = {"PROVIDER_DATABASE_URL": args.database_url} if args.database_url else {}
        (pid,) = start([spec], var_dir=var_dir, bootstrap="", env=env, report=lambda _: None)
        try:
            wait_ready([spec], var_dir=var_dir, deadline_s=60)
            wall, stand_in, mine, others = asyncio.run(
                _load(f"http://127.0.0.1:{port}", pid, args.pairs, args.in_flight, args.warm_up)
            )
        finally:
            stop([spec], var_dir=var_dir)
    cores = os.cpu_count() or 1
    print(
        f"provider: {2 * args.pairs / wall:.0f} requests/s ({args.pairs} pairs, "
        f"{args.in_flight} in flight, {wall:.1f} s); CPU on average: stand-in "
        f"{stand_in / wall:.2f} cores, this process {mine / wall:.2f}, other "
        f"processes {max(others, 0.0) / wall:.2f} (of {cores})"
    )


if __name__ == "__main__":
    main()
