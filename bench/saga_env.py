"""What the saga benchmark's stack runs against: the database backend and the trace sink.

- ``databases``: SQLite (the services' default: one file per service under ``VAR_DIR``) or a
  private PostgreSQL cluster with the server's default durable settings (fsync, synchronous
  commit and full-page writes on, as ``infra.postgres.start_cluster(durable=True)`` starts
  it), a fresh database per service, handed over as ``<NAME>_DATABASE_URL`` as ``choreo up``
  and compose do.
- ``trace_sink``: the ``bench.otlp_sink`` process; the services get ``TRACE_EXPORTER=otlp``
  and ``OTLP_ENDPOINT`` pointing at it, the settings compose ships with (Jaeger there).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import urllib.request
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from events.settings import REPO_ROOT
from infra.broker import free_port
from infra.postgres import create_database, start_cluster, stop_cluster

NO_DATABASE = frozenset({"analytics"})  # faust keeps its tables in Kafka


@contextlib.contextmanager
def databases(backend: str, services: Sequence[str]) -> Iterator[tuple[dict[str, str], int | None]]:
    """``<NAME>_DATABASE_URL`` settings for the services (none for SQLite: the default),
    and the database server's pid (its CPU counts with the stack's)."""
    if backend == "sqlite":
        yield {}, None
        return
    # The postgres user must reach the cluster's directory: a world-traversable temp dir.
    home = Path(tempfile.mkdtemp(prefix="choreo-bench-pg-"))
    home.chmod(0o755)
    cluster = start_cluster(home / "cluster", free_port(), durable=True)
    try:
        urls = {  # an instance's name (query-2) as its setting's (QUERY_2_DATABASE_URL)
            f"{name.upper().replace('-', '_')}_DATABASE_URL": create_database(
                cluster, prefix=name.replace("-", "_")
            )
            for name in services
            if name not in NO_DATABASE
        }
        pid = int((cluster.data_dir / "postmaster.pid").read_text().split()[0])
        yield urls, pid
    finally:
        stop_cluster(cluster)
        shutil.rmtree(home, ignore_errors=True)


@dataclass
class TraceSink:
    endpoint: str
    pid: int

    def stats(self) -> dict[str, int]:
        url = self.endpoint.rsplit("/v1/", 1)[0] + "/stats"
        with urllib.request.urlopen(url, timeout=5) as reply:
            data: dict[str, int] = json.load(reply)
        return data


@contextlib.asynccontextmanager
async def trace_sink() -> AsyncIterator[TraceSink]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.otlp_sink",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO_ROOT,
    )
    try:
        assert proc.stdout is not None and proc.pid is not None
        async with asyncio.timeout(30):
            line = (await proc.stdout.readline()).decode().split()
        if len(line) != 2 or line[0] != "ready":
            raise RuntimeError(f"the OTLP sink did not start (exit {proc.returncode})")
        yield TraceSink(f"http://127.0.0.1:{line[1]}/v1/traces", proc.pid)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()  # the sink exits when its stdin closes
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


def tracing_env(sink: TraceSink | None) -> dict[str, str]:
    if sink is None:
        return {"TRACE_EXPORTER": "none"}
    return {"TRACE_EXPORTER": "otlp", "OTLP_ENDPOINT": sink.endpoint}
