"""The secured broker's CA, certificate and passwords (infra.tls, infra.credentials): what a
client's TLS stack checks, who may read the files, and that a restart reuses them."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509

from infra.broker import BrokerSpec, _scram_argument
from infra.credentials import CredentialsError, ensure_passwords
from infra.tls import ensure_broker_tls


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_broker_certificate_names_loopback_and_chains_to_the_ca(tmp_path: Path):
    files = ensure_broker_tls(tmp_path / "tls")
    chain = x509.load_pem_x509_certificates(files.keystore.read_bytes())
    leaf, ca = chain[0], x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    leaf.verify_directly_issued_by(ca)
    assert leaf.not_valid_after_utc > datetime.datetime.now(datetime.UTC)
    # Python's own TLS stack accepts the CA file and the keystore's key and chain.
    context = ssl.create_default_context(cafile=str(files.ca_cert))
    context.load_cert_chain(str(files.keystore))


def test_private_files_are_owner_only_and_reused(tmp_path: Path):
    first = ensure_broker_tls(tmp_path / "tls")
    assert _mode(first.ca_key) == 0o600
    assert _mode(first.keystore) == 0o600
    before = (first.ca_cert.read_bytes(), first.keystore.read_bytes())
    again = ensure_broker_tls(tmp_path / "tls")
    assert (again.ca_cert.read_bytes(), again.keystore.read_bytes()) == before


def test_a_certificate_for_other_hosts_is_reissued_by_the_same_ca(tmp_path: Path):
    first = ensure_broker_tls(tmp_path / "tls")
    ca_before, leaf_before = first.ca_cert.read_bytes(), first.keystore.read_bytes()
    second = ensure_broker_tls(tmp_path / "tls", hosts=("127.0.0.1", "localhost", "kafka"))
    assert second.ca_cert.read_bytes() == ca_before
    assert second.keystore.read_bytes() != leaf_before


def test_passwords_are_generated_once_and_kept_owner_only(tmp_path: Path):
    path = tmp_path / "credentials.json"
    first = ensure_passwords(path, ["orders", "payments"])
    assert set(first) == {"admin", "operator", "broker", "orders", "payments"}
    assert _mode(path) == 0o600
    assert len({p.get_secret_value() for p in first.values()}) == len(first)
    again = ensure_passwords(path, ["orders", "payments", "shipping"])
    assert {n: p.get_secret_value() for n, p in again.items() if n != "shipping"} == {
        n: p.get_secret_value() for n, p in first.items()
    }
    assert "shipping" in again


def test_an_unusable_principal_name_is_refused(tmp_path: Path):
    with pytest.raises(CredentialsError, match="principal names"):
        ensure_passwords(tmp_path / "credentials.json", ['orders"; x'])


def test_the_connection_and_environment_never_show_the_password(tmp_path: Path):
    spec = BrokerSpec(home=tmp_path, port=9094, controller_port=9095, secure=True,
                      principals=("orders",))  # fmt: skip
    conn = spec.connection("orders")
    password = spec.passwords()["orders"].get_secret_value()
    assert conn.principal == "User:orders"
    assert conn.security_protocol == "SASL_SSL"
    assert conn.ca_file == spec.ca_file
    assert password not in repr(conn)
    assert spec.environment("orders")["KAFKA_SASL_PASSWORD"] == password  # for a child only
    assert password not in _scram_argument("orders", spec.passwords()["orders"])
