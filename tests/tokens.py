"""Bearer tokens for the tests: the suite's shared HS256 secret (tests/conftest.py puts it in
the environment, so every service a test builds or starts verifies with it) and headers
carrying an operator's or a customer's token signed with it."""

from __future__ import annotations

from events.auth import CUSTOMER_SCOPES, OPERATOR_SCOPES, mint

TEST_SECRET = "test-secret-of-the-choreo-suite-0123456789"


def bearer(subject: str, scopes: tuple[str, ...], ttl_s: float = 3600) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(TEST_SECRET, subject, scopes, ttl_s=ttl_s)}"}


def operator_headers() -> dict[str, str]:
    """Every scope: what the harness clients send, so existing tests read and act as before."""
    return bearer("operator", OPERATOR_SCOPES)


def operator_token() -> str:
    return mint(TEST_SECRET, "operator", OPERATOR_SCOPES)


def customer_headers(customer_id: str) -> dict[str, str]:
    return bearer(customer_id, CUSTOMER_SCOPES)
