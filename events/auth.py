"""Bearer tokens (JWT) on the services' HTTP APIs: the settings, verification with PyJWT,
the scopes and what they allow, FastAPI dependencies, and minting development tokens.

A token is accepted when its signature verifies (HS256 with a shared secret, or RS256 /
ES256 with a public key from a JWKS file or URL), its ``iss`` and ``aud`` are this
platform's and it has not expired (a small leeway for clock skew). Its ``sub`` is the
caller: for a customer, the customer id. Its ``scope`` (space-separated, as OAuth 2 puts
it; a list is accepted too) says what it may do:

``orders:write``   place and cancel one's own orders
``orders:read``    read one's own orders and customer view
``operator:read``  read everything: all orders, stats, timelines, SKUs, the dashboard,
                   every service's GETs, ``/metrics`` and ``/openapi.json``
``operator:write`` operator actions: act on any customer's orders (and redrive, deposit,
                   restock where they have HTTP routes)

Missing or invalid token: 401 with ``WWW-Authenticate: Bearer`` and a JSON body; a valid
token without the scope: 403; another customer's order: 404, as if it did not exist.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import jwt
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings

from events.scopes import (
    CUSTOMER_SCOPES,
    OPERATOR_READ,
    OPERATOR_SCOPES,
    OPERATOR_WRITE,
    ORDERS_READ,
    ORDERS_WRITE,
    SCOPES,
)

log = logging.getLogger(__name__)

__all__ = [
    "CUSTOMER_SCOPES",
    "OPERATOR_READ",
    "OPERATOR_SCOPES",
    "OPERATOR_WRITE",
    "ORDERS_READ",
    "ORDERS_WRITE",
    "SCOPES",
    "AuthSettings",
    "Authenticator",
    "Caller",
    "Unauthenticated",
    "authenticated",
    "forbidden",
    "mint",
    "not_found",
    "requires",
    "unauthorized",
]

ASYMMETRIC = ["RS256", "ES256"]
MIN_SECRET_CHARS = 32  # HS256 below 256 bits of key is guessable offline (RFC 7518 3.2)


def dev_secret_path(var_dir: Path) -> Path:
    """Where ``choreo up`` keeps the local development signing key."""
    return var_dir / "auth" / "jwt-secret"


class AuthSettings(BaseSettings):
    """How a service verifies bearer tokens (every service's settings include these)."""

    auth_jwt_secret: SecretStr | None = Field(
        default=None, description="HS256 shared secret (at least 32 characters)"
    )
    auth_jwt_secret_file: Path | None = Field(
        default=None, description="File holding the HS256 secret (choreo up: var/auth/jwt-secret)"
    )
    auth_jwks_file: Path | None = Field(
        default=None, description="JWKS file of RS256/ES256 public keys"
    )
    auth_jwks_url: str | None = Field(
        default=None, pattern=r"^https?://\S+$", description="JWKS URL of RS256/ES256 public keys"
    )
    auth_issuer: str = Field(default="choreo", description="Required iss claim")
    auth_audience: str = Field(default="choreo", description="Required aud claim")
    auth_leeway_s: float = Field(
        default=30, ge=0, le=300, description="Clock skew allowed on exp/nbf/iat"
    )
    # Last, so that its check sees the keys (and a missing key is reported as AUTH_MODE's).
    auth_mode: Literal["jwt", "none"] = Field(
        default="jwt",
        validate_default=True,
        description="jwt: bearer tokens required; none: no authentication",
    )

    @field_validator("auth_jwt_secret")
    @classmethod
    def _long_enough(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None and len(secret.get_secret_value()) < MIN_SECRET_CHARS:
            raise ValueError(f"the HS256 secret must have at least {MIN_SECRET_CHARS} characters")
        return secret

    @field_validator("auth_jwks_file")
    @classmethod
    def _a_file(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise ValueError(f"{path} is not a file")
        return path

    @field_validator("auth_mode")
    @classmethod
    def _one_key(cls, mode: str, info: ValidationInfo) -> str:
        keys = ("auth_jwt_secret", "auth_jwt_secret_file", "auth_jwks_file", "auth_jwks_url")
        given = [k for k in keys if info.data.get(k) is not None]
        if mode == "jwt" and len(given) != 1:
            named = f" (given: {', '.join(k.upper() for k in given)})" if given else ""
            raise ValueError(
                "jwt needs one key: AUTH_JWT_SECRET, AUTH_JWT_SECRET_FILE, AUTH_JWKS_FILE or "
                f"AUTH_JWKS_URL{named}; AUTH_MODE=none turns authentication off"
            )
        return mode

    @model_validator(mode="after")
    def _read_secret_file(self) -> Self:
        if self.auth_mode != "jwt" or self.auth_jwt_secret_file is None:
            return self
        try:
            text = self.auth_jwt_secret_file.read_text().strip()
        except OSError as exc:
            raise ValueError(f"cannot read AUTH_JWT_SECRET_FILE: {exc.strerror}") from None
        self.auth_jwt_secret = self._long_enough(SecretStr(text))
        return self


@dataclass(frozen=True)
class Caller:
    """Who a verified token speaks for and what it may do."""

    subject: str
    scopes: frozenset[str]

    def has(self, scope: str) -> bool:
        return scope in self.scopes

    def may_read(self, customer_id: str | None) -> bool:
        """Operators read everything; a customer reads only what is theirs."""
        return self.has(OPERATOR_READ) or (self.has(ORDERS_READ) and customer_id == self.subject)

    def may_act_for(self, customer_id: str | None) -> bool:
        return self.has(OPERATOR_WRITE) or (self.has(ORDERS_WRITE) and customer_id == self.subject)


class Unauthenticated(Exception):
    """No token, or one that does not verify: 401."""


class Authenticator:
    """Verifies tokens with the key the settings name; built once per process."""

    def __init__(
        self,
        key: Callable[[str], Awaitable[tuple[Any, list[str]]]] | None,
        *,
        issuer: str,
        audience: str,
        leeway_s: float,
    ) -> None:
        self._key = key  # None: AUTH_MODE=none
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s

    @property
    def enabled(self) -> bool:
        return self._key is not None

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> Authenticator:
        key: Callable[[str], Awaitable[tuple[Any, list[str]]]] | None = None
        if settings.auth_mode == "jwt":
            if settings.auth_jwt_secret is not None:
                key = _shared_secret(settings.auth_jwt_secret)
            elif settings.auth_jwks_file is not None:
                key = _jwks(jwt.PyJWKSet.from_json(settings.auth_jwks_file.read_text()))
            elif settings.auth_jwks_url is not None:
                key = _jwks_url(jwt.PyJWKClient(settings.auth_jwks_url, lifespan=300))
        return cls(
            key,
            issuer=settings.auth_issuer,
            audience=settings.auth_audience,
            leeway_s=settings.auth_leeway_s,
        )

    async def verify(self, token: str | None) -> Caller:
        if self._key is None:
            return Caller("anonymous", frozenset(SCOPES))
        if not token:
            raise Unauthenticated("a bearer token is required (Authorization: Bearer <token>)")
        try:
            key, algorithms = await self._key(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired") from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"the token is not valid: {exc}") from None
        return Caller(str(claims["sub"]), _scopes(claims.get("scope", claims.get("scp"))))


def _scopes(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(str(v) for v in value)
    return frozenset()


def _shared_secret(secret: SecretStr) -> Callable[[str], Awaitable[tuple[Any, list[str]]]]:
    async def key(token: str) -> tuple[Any, list[str]]:
        return secret.get_secret_value(), ["HS256"]

    return key


def _jwks(keys: jwt.PyJWKSet) -> Callable[[str], Awaitable[tuple[Any, list[str]]]]:
    async def key(token: str) -> tuple[Any, list[str]]:
        kid = jwt.get_unverified_header(token).get("kid")
        usable = [k for k in keys.keys if k.algorithm_name in ASYMMETRIC]
        chosen = [k for k in usable if kid is None or k.key_id == kid]
        if kid is None and len(chosen) > 1:
            raise jwt.InvalidTokenError("the token names no key (kid) and the JWKS has several")
        if not chosen:
            raise jwt.InvalidTokenError(f"no RS256/ES256 key {kid!r} in the JWKS")
        return chosen[0].key, [chosen[0].algorithm_name]

    return key


def _jwks_url(client: jwt.PyJWKClient) -> Callable[[str], Awaitable[tuple[Any, list[str]]]]:
    async def key(token: str) -> tuple[Any, list[str]]:
        # PyJWKClient fetches with urllib (blocking) when its cache misses: off the loop.
        signing = await asyncio.to_thread(client.get_signing_key_from_jwt, token)
        if signing.algorithm_name not in ASYMMETRIC:
            raise jwt.InvalidTokenError(f"key algorithm {signing.algorithm_name} not accepted")
        return signing.key, [signing.algorithm_name]

    return key


def warn_if_open(name: str, settings: AuthSettings) -> None:
    """At start: say loudly that a service answers anyone."""
    if settings.auth_mode == "none":
        log.warning("%s: AUTH_MODE=none - the HTTP API answers anyone, without a token", name)


# --- FastAPI --------------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="A JWT: `choreo token --operator`")


def unauthorized(reason: str) -> HTTPException:
    return HTTPException(
        401, reason, headers={"WWW-Authenticate": 'Bearer realm="choreo", error="invalid_token"'}
    )


def forbidden(scopes: Iterable[str]) -> HTTPException:
    wanted = " ".join(scopes)
    return HTTPException(
        403,
        f"the token lacks the scope this needs: {' or '.join(wanted.split())}",
        headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{wanted}"'},
    )


async def authenticated(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Caller:
    """The verified caller (401 without a valid token); verified once per request."""
    cached = getattr(request.state, "caller", None)
    if isinstance(cached, Caller):
        return cached
    auth: Authenticator = request.app.state.auth
    try:
        caller = await auth.verify(credentials.credentials if credentials else None)
    except Unauthenticated as exc:
        raise unauthorized(str(exc)) from None
    request.state.caller = caller
    return caller


def requires(*any_of: str) -> Callable[..., Awaitable[Caller]]:
    """A dependency: the caller, when their token has one of ``any_of`` (else 403)."""

    async def scoped(caller: Annotated[Caller, Depends(authenticated)]) -> Caller:
        if not any(caller.has(s) for s in any_of):
            raise forbidden(any_of)
        return caller

    return scoped


def not_found(what: str) -> HTTPException:
    """Another customer's data looks like none at all: its ids do not leak."""
    return HTTPException(404, f"{what} not found")


# --- minting (development) ------------------------------------------------------------------


def mint(
    secret: str,
    subject: str,
    scopes: Iterable[str],
    *,
    ttl_s: float = 3600,
    issuer: str = "choreo",
    audience: str = "choreo",
) -> str:
    """An HS256 token for ``subject`` with ``scopes``, valid ``ttl_s`` seconds from now."""
    now = int(time.time())
    claims = {
        "sub": subject,
        "scope": " ".join(scopes),
        "iss": issuer,
        "aud": audience,
        "iat": now,
        "exp": now + int(ttl_s),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def ensure_dev_secret(var_dir: Path) -> Path:
    """The local signing key under ``var_dir`` (created once, readable by its owner only)."""
    path = dev_secret_path(var_dir)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(48) + "\n")
    return path


def signing_secret(var_dir: Path, environ: Mapping[str, str]) -> str | None:
    """The HS256 key this machine's services verify with, for the CLI to sign with:
    ``AUTH_JWT_SECRET``, else the file ``AUTH_JWT_SECRET_FILE`` names, else ``choreo up``'s
    local key; None when there is none."""
    if environ.get("AUTH_JWT_SECRET"):
        return environ["AUTH_JWT_SECRET"]
    path = environ.get("AUTH_JWT_SECRET_FILE") or dev_secret_path(var_dir)
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


def local_operator_headers(
    var_dir: Path, environ: Mapping[str, str], ttl_s: float = 60
) -> dict[str, str]:
    """An Authorization header with an operator token from :func:`signing_secret`, or none."""
    secret = signing_secret(var_dir, environ)
    return {} if secret is None else operator_bearer(secret, ttl_s)


def operator_bearer(secret: str, ttl_s: float) -> dict[str, str]:
    """An Authorization header with an operator token (every scope) signed with ``secret``."""
    return {"Authorization": f"Bearer {mint(secret, 'operator', OPERATOR_SCOPES, ttl_s=ttl_s)}"}


AUTH_KEYS = (
    "AUTH_MODE",
    "AUTH_JWT_SECRET",
    "AUTH_JWT_SECRET_FILE",
    "AUTH_JWKS_FILE",
    "AUTH_JWKS_URL",
)


def local_stack_auth(
    var_dir: Path, environ: Mapping[str, str]
) -> tuple[dict[str, str], str | None]:
    """What ``choreo up`` passes its services, and the local key's secret for minting: the
    local key (created once) unless the environment already says how to authenticate."""
    if any(environ.get(name) for name in AUTH_KEYS):
        return {}, None
    path = ensure_dev_secret(var_dir)
    return {"AUTH_JWT_SECRET_FILE": str(path)}, path.read_text().strip()
