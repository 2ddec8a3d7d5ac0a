"""A private PostgreSQL cluster from Debian's packages, for tests and local runs.

The server binaries come from the `postgresql` package (`make test` installs it when
missing). A cluster lives in a directory of its own, listens on loopback on the given port
and trusts local connections; `initdb` refuses to run as root, so as root the cluster is
owned by the `postgres` system user that the package creates.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path


class PostgresError(Exception):
    """The server is missing or would not start; the message is one line."""


@dataclass(frozen=True)
class PgCluster:
    home: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_file(self) -> Path:
        return self.home / "server.log"

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"


def server_bin() -> Path:
    roots = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not roots:
        raise PostgresError(
            "PostgreSQL server not found: install it (Debian: apt-get install postgresql)"
        )
    return roots[-1].parent


def _as_owner(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        if runuser is None:
            raise PostgresError("running as root needs runuser to start PostgreSQL as postgres")
        return [runuser, "-u", "postgres", "--", *cmd]
    return cmd


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(_as_owner(cmd), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise PostgresError(f"{what} failed: {detail[-1] if detail else done.returncode}")


def start_cluster(home: Path, port: int, *, durable: bool = False) -> PgCluster:
    """initdb (if new) and start; ``durable=False`` turns fsync off (tests only)."""
    bin_dir = server_bin()
    cluster = PgCluster(home, port)
    home.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(home, "postgres", "postgres")
    if not (cluster.data_dir / "PG_VERSION").exists():
        _run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(cluster.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ],
            "initdb",
        )
    options = [
        f"-p {port}",
        "-c listen_addresses=127.0.0.1",
        f"-k {home}",
        "-c max_connections=300",
        "-c shared_buffers=64MB",
    ]
    if not durable:
        options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
    _run(
        [
            str(bin_dir / "pg_ctl"),
            "-D",
            str(cluster.data_dir),
            "-l",
            str(cluster.log_file),
            "-o",
            " ".join(options),
            "-w",
            "-t",
            "60",
            "start",
        ],
        "pg_ctl start",
    )
    return cluster


def stop_cluster(cluster: PgCluster) -> None:
    bin_dir = server_bin()
    _run(
        [str(bin_dir / "pg_ctl"), "-D", str(cluster.data_dir), "-m", "fast", "-w", "stop"],
        "pg_ctl stop",
    )


def create_database(cluster: PgCluster, prefix: str = "choreo") -> str:
    """Creates a fresh database; returns its SQLAlchemy URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    psql = server_bin() / "psql"
    if not psql.exists():
        psql = Path(shutil.which("psql") or "psql")
    done = subprocess.run(
        [
            str(psql),
            "-h",
            "127.0.0.1",
            "-p",
            str(cluster.port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-c",
            f'CREATE DATABASE "{name}"',
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise PostgresError(f"CREATE DATABASE failed: {done.stderr.strip()}")
    return cluster.url(name)
