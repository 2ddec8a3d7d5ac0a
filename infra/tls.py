"""A private CA and the local broker's certificate, made with the ``cryptography`` package
(no download, no JDK keytool): what ``choreo broker up --secure`` serves TLS with.

    files = ensure_broker_tls(home / "tls")   # reused while valid, re-issued when not
    files.ca_cert      # PEM, public: what clients trust (KAFKA_SSL_CAFILE)
    files.keystore     # PEM private key + certificate chain, 0600: Kafka's ssl.keystore

Keys are ECDSA P-256: the handshakes cost less CPU than RSA's on a 2-core machine, and both
Java's and Python's TLS stacks accept them. Private files are written 0600 from the start
(created with that mode, never chmod-ed after the secret is in them).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Authority", "TlsFiles", "ensure_broker_tls", "make_authority", "write_private"]

DEFAULT_HOSTS = ("127.0.0.1", "localhost")
_CA_DAYS = 3650
_LEAF_DAYS = 397  # the longest leaf lifetime browsers and most TLS stacks accept
_RENEW_BEFORE = datetime.timedelta(days=30)


@dataclass(frozen=True)
class Authority:
    """A CA's certificate and key (PEM files)."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class TlsFiles:
    """The files a TLS listener and its clients need."""

    ca_cert: Path  # public: clients trust it
    ca_key: Path  # 0600: signs the broker's certificate
    keystore: Path  # 0600: the broker's private key, its certificate and the CA's


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only, atomically (a reader never
    sees half a key, and the secret never sits in a file with wider permissions)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def make_authority(directory: Path, name: str = "choreo local CA") -> Authority:
    """A new self-signed CA in ``directory`` (``ca.pem``, ``ca.key``), replacing any there."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    authority = Authority(cert=directory / "ca.pem", key=directory / "ca.key")
    write_private(authority.key, _key_pem(key))
    directory.mkdir(parents=True, exist_ok=True)
    authority.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return authority


def ensure_broker_tls(directory: Path, hosts: Sequence[str] = DEFAULT_HOSTS) -> TlsFiles:
    """The CA and a broker certificate for ``hosts`` under ``directory``: the existing ones
    while they are valid for another 30 days and name the same hosts, else new ones. A new
    CA means clients must trust the new ``ca.pem``; it is made only when the old one is
    missing or expiring."""
    files = TlsFiles(
        ca_cert=directory / "ca.pem", ca_key=directory / "ca.key", keystore=directory / "broker.pem"
    )
    ca = _load_valid_ca(files)
    if ca is None:
        make_authority(directory)
        ca = _load_valid_ca(files)
        assert ca is not None  # just written
    if not _leaf_is_current(files, ca[0], hosts):
        _issue_leaf(files, ca, hosts)
    return files


# --------------------------------------------------------------------------- internals


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    # PKCS#8 unencrypted: the form Kafka's PEM keystore reads without a key password.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _fresh(cert: x509.Certificate) -> bool:
    return cert.not_valid_after_utc - _RENEW_BEFORE > _now()


def _load_valid_ca(
    files: TlsFiles,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    try:
        cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not _fresh(cert):
        return None
    return cert, key


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _leaf_is_current(files: TlsFiles, ca: x509.Certificate, hosts: Sequence[str]) -> bool:
    try:
        certs = x509.load_pem_x509_certificates(files.keystore.read_bytes())
    except (OSError, ValueError):
        return False
    leaf = certs[0]
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return leaf.issuer == ca.subject and _fresh(leaf) and san == _san(hosts)


def _issue_leaf(
    files: TlsFiles,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    hosts: Sequence[str],
) -> None:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_san(hosts), critical=False)
        # serverAuth for clients; clientAuth because the broker also connects to itself
        # (transaction markers) through the same listener.
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    chain = cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(
        serialization.Encoding.PEM
    )
    write_private(files.keystore, _key_pem(key) + chain)
