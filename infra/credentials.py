"""The secured local broker's principals and their passwords: generated once
(``secrets.token_urlsafe``), kept in one 0600 JSON file under the broker's home and reused on
every restart, so a running service's password stays valid.

Principals: one per service (the caller passes the names: infra does not read the services'
manifest), ``operator`` (the CLI's publisher and redrive), ``admin`` (super user: topics, ACLs)
and ``broker`` (the broker's own principal on its inter-broker and controller connections).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import SecretStr

from infra.tls import write_private

__all__ = ["ADMIN", "BROKER", "OPERATOR", "CredentialsError", "ensure_passwords", "valid_name"]

ADMIN = "admin"
OPERATOR = "operator"
BROKER = "broker"
BUILT_IN = (ADMIN, OPERATOR, BROKER)


class CredentialsError(Exception):
    """The credentials file cannot be read or a principal name is unusable."""


def valid_name(name: str) -> bool:
    # SCRAM user names end up inside JAAS strings and `--add-scram` arguments: keep them to
    # characters neither needs to quote.
    return bool(name) and all(c.isalnum() or c in "-_." for c in name)


def ensure_passwords(path: Path, names: Iterable[str]) -> dict[str, SecretStr]:
    """Every principal in ``names`` and the built-in ones with its password: the file's where
    it has one, a new one (written back) where not."""
    wanted = [*BUILT_IN, *names]
    bad = [n for n in wanted if not valid_name(n)]
    if bad:
        raise CredentialsError(f"principal names may hold letters, digits, '-', '_', '.': {bad}")
    stored = _read(path)
    missing = [n for n in wanted if n not in stored]
    if missing:
        stored.update({n: secrets.token_urlsafe(24) for n in missing})
        write_private(path, (json.dumps(stored, indent=2, sort_keys=True) + "\n").encode())
    return {n: SecretStr(stored[n]) for n in dict.fromkeys(wanted)}


def _read(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise CredentialsError(f"cannot read the broker's credentials {path}: {exc}") from None
    if not isinstance(data, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise CredentialsError(f"{path} must map principal names to passwords")
    return dict(data)
