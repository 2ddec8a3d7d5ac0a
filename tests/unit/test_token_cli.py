"""``choreo token``: development tokens the services accept, from the key they verify with."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest

from events.auth import OPERATOR_SCOPES, Authenticator, AuthSettings
from events.cli.main import main
from tests.tokens import TEST_SECRET


def claims(token: str, secret: str = TEST_SECRET) -> dict[str, object]:
    return jwt.decode(token, secret, algorithms=["HS256"], audience="choreo", issuer="choreo")


def test_an_operator_token_from_a_key_file_verifies_with_every_operator_scope(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    key = tmp_path / "jwt-secret"
    key.write_text("k" * 40 + "\n")
    assert main(["token", "--operator", "--key-file", str(key)]) == 0
    token = capsys.readouterr().out.strip()
    body = claims(token, "k" * 40)
    assert body["sub"] == "operator" and set(str(body["scope"]).split()) == set(OPERATOR_SCOPES)
    assert abs(int(body["exp"]) - (time.time() + 3600)) < 60  # type: ignore[call-overload]


async def test_a_customer_token_signed_with_the_services_secret_is_accepted(
    capsys: pytest.CaptureFixture[str],
):
    # tests/conftest.py puts the suite's AUTH_JWT_SECRET in the environment, as a service has.
    assert main(["token", "--customer", "cust-7", "--ttl", "30m"]) == 0
    token = capsys.readouterr().out.strip()
    caller = await Authenticator.from_settings(AuthSettings()).verify(token)
    assert caller.subject == "cust-7" and caller.scopes == {"orders:read", "orders:write"}
    assert abs(int(claims(token)["exp"]) - (time.time() + 1800)) < 60  # type: ignore[call-overload]


def test_no_key_bad_ttl_or_unknown_scope_fail_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.delenv("AUTH_JWT_SECRET")
    monkeypatch.setenv("VAR_DIR", str(tmp_path))
    assert main(["token", "--operator"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no signing key" in err and "choreo up" in err
    monkeypatch.setenv("AUTH_JWT_SECRET", TEST_SECRET)
    assert main(["token", "--operator", "--ttl", "forever"]) == 2
    assert "--ttl" in capsys.readouterr().err
    assert main(["token", "--customer", "c", "--scope", "root"]) == 2
    assert "unknown scope root" in capsys.readouterr().err
    assert main(["token", "--customer", "c", "--scope", "orders:read"]) == 0
    assert claims(capsys.readouterr().out.strip())["scope"] == "orders:read"


def test_a_key_the_services_would_refuse_signs_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setenv("AUTH_JWT_SECRET", "short")
    assert main(["token", "--operator"]) == 1
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1 and "at least 32 characters" in out.err
