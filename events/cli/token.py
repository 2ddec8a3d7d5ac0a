"""``choreo token``: a development bearer token for the services' HTTP APIs, signed with the
local key ``choreo up`` creates (``var/auth/jwt-secret``). Printed alone on stdout, so
``curl -H "Authorization: Bearer $(choreo token --operator)" ...`` works. It signs with the
key the services on this machine verify with (``AUTH_JWT_SECRET``, ``AUTH_JWT_SECRET_FILE``,
else ``choreo up``'s local key).

Production tokens come from an identity provider (the services then verify RS256/ES256
with its JWKS); this command only signs HS256 with a key on this machine."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

from events.cli.errors import USAGE, CliError
from events.scopes import CUSTOMER_SCOPES, OPERATOR_SCOPES, SCOPES
from events.settings import PlatformSettings

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_TTL_S = 366 * 86400


def ttl_seconds(text: str) -> int:
    """``90``, ``30m``, ``1h``, ``7d`` as seconds."""
    match = re.fullmatch(r"(\d+)([smhd]?)", text.strip())
    if match is None:
        raise CliError(f"--ttl {text!r}: a number with s, m, h or d (e.g. 1h)", USAGE)
    seconds = int(match.group(1)) * UNITS[match.group(2) or "s"]
    if not 0 < seconds <= MAX_TTL_S:
        raise CliError(f"--ttl {text!r}: between 1s and {MAX_TTL_S // 86400}d", USAGE)
    return seconds


def token_command(args: argparse.Namespace, settings: PlatformSettings) -> int:
    # Imported when run: PyJWT and its cryptography, which no other command needs.
    from events.auth import MIN_SECRET_CHARS, dev_secret_path, mint, signing_secret

    if args.key_file is not None:
        try:
            secret: str | None = args.key_file.read_text().strip()
        except OSError as exc:
            raise CliError(f"cannot read --key-file {args.key_file}: {exc.strerror}") from None
    else:
        secret = signing_secret(settings.var_dir, os.environ)
    if not secret:
        raise CliError(
            f"no signing key: none at {dev_secret_path(settings.var_dir)} (`choreo up` creates "
            "it), and neither AUTH_JWT_SECRET nor AUTH_JWT_SECRET_FILE is set; or pass --key-file"
        )
    if len(secret) < MIN_SECRET_CHARS:
        # The services refuse such a key, so a token signed with it would open nothing.
        raise CliError(f"the signing key must have at least {MIN_SECRET_CHARS} characters")
    if args.customer is not None:
        subject, scopes = args.customer, list(CUSTOMER_SCOPES)
    else:
        subject, scopes = "operator", list(OPERATOR_SCOPES)
    if args.scope:
        unknown = sorted(set(args.scope) - set(SCOPES))
        if unknown:
            known = ", ".join(SCOPES)
            raise CliError(f"unknown scope {', '.join(unknown)} (known: {known})", USAGE)
        scopes = list(args.scope)
    ttl = ttl_seconds(args.ttl)
    print(mint(secret, subject, scopes, ttl_s=ttl, issuer=args.issuer, audience=args.audience))
    return 0


def register(sub: Any) -> None:
    token = sub.add_parser(
        "token",
        help="mint a development bearer token from the local key",
        description="Scopes: "
        + "; ".join(f"{name}: {what}" for name, what in SCOPES.items())
        + ". A customer token has orders:read and orders:write; an operator token all four.",
    )
    who = token.add_mutually_exclusive_group(required=True)
    who.add_argument("--customer", metavar="ID", help="a customer's token (sub = ID)")
    who.add_argument("--operator", action="store_true", help="an operator's token")
    token.add_argument("--ttl", default="1h", help="how long it is valid: 90s, 30m, 1h, 7d")
    token.add_argument(
        "--scope",
        action="append",
        metavar="SCOPE",
        help="only these scopes (repeatable) instead of the role's",
    )
    token.add_argument(
        "--key-file",
        type=Path,
        help="HS256 key file (default: AUTH_JWT_SECRET, AUTH_JWT_SECRET_FILE, else "
        "<VAR_DIR>/auth/jwt-secret)",
    )
    # Read here, at the command's entry, as the services read them from their environment.
    token.add_argument(
        "--issuer", default=os.environ.get("AUTH_ISSUER", "choreo"), help="iss (AUTH_ISSUER)"
    )
    token.add_argument(
        "--audience",
        default=os.environ.get("AUTH_AUDIENCE", "choreo"),
        help="aud (AUTH_AUDIENCE)",
    )
    token.set_defaults(run=token_command)
