"""Kafka's refusals that no retry can fix, told apart from a broker that is not there yet,
and said in one line naming the principal, the resource and what to fix.

- a wrong user name or password (``SaslAuthenticationFailed``, aiokafka's
  ``AuthenticationFailedError``), or a SASL mechanism the broker does not offer;
- a broker certificate this process does not trust (``ssl.SSLCertVerificationError``) or a
  TLS handshake that fails for another reason (a client certificate the broker refuses);
- a missing ACL (``TopicAuthorizationFailedError``, ``GroupAuthorizationFailedError``,
  ``ClusterAuthorizationFailedError``, ``TransactionalIdAuthorizationFailed``).

A service's start-up (``events.components``) stops on these instead of retrying for ever;
the command line prints the same line (``events.unreachable``).

aiokafka reports a refusal during bootstrap only as ``KafkaConnectionError("Unable to
bootstrap ...")``: the cause is logged, not chained. When a secured connection fails that
way, :func:`diagnose` opens one connection itself with aiokafka's public ``create_conn``
(the same TLS context and SASL exchange) to learn why. This module is hand-written because
no library maps Kafka's refusals to what an operator must change.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ssl
from collections.abc import AsyncIterator, Iterable
from typing import Literal

from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    IllegalSaslStateError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    UnsupportedSaslMechanismError,
)

from events.kafka import KafkaConnection

Doing = Literal["read", "write", "describe", "create"]

ACL_FIX = "add the ACL: choreo topics apply, or ask the cluster's admin"
PROBE_TIMEOUT_S = 10.0
# sysexits' EX_CONFIG: how a service exits when Kafka refused its principal; restarting cannot
# help (a supervisor can be told not to restart on it, e.g. systemd's RestartPreventExitStatus).
EXIT_REFUSED = 78


class KafkaRefused(Exception):
    """Kafka refused this process for a reason a retry cannot fix; ``str()`` is the one
    line to print."""


def _causes(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 8:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _names(exc: BaseException) -> str:
    """The resource names an authorization error carries (a name, or a set of them)."""
    parts: list[str] = []
    for arg in exc.args:
        if isinstance(arg, str):
            parts.append(arg)
        elif isinstance(arg, Iterable):
            parts.extend(sorted(str(a) for a in arg))
    return ", ".join(parts)


def _said(exc: BaseException) -> str:
    # A broker's error renders as "[Error 58] SaslAuthenticationFailed: <message>": the
    # message alone reads better after the line's own words.
    text = exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], str) else str(exc)
    return " ".join(text.split()) or type(exc).__name__


def refusal(kafka: KafkaConnection, exc: BaseException, doing: Doing | None = None) -> str | None:
    """The one line for ``exc`` if it (or what caused it) is a refusal; None when a retry
    may help. ``doing``: what the process was doing with a topic, for the wording."""
    who = kafka.principal
    for cause in _causes(exc):
        if isinstance(cause, SaslAuthenticationFailed | AuthenticationFailedError):
            return (
                f"kafka: {who} cannot log in to {kafka.bootstrap} with "
                f"{kafka.sasl_mechanism or 'PLAIN'}: {_said(cause)} "
                "(check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD)"
            )
        if isinstance(
            cause,
            UnsupportedSaslMechanismError
            | AuthenticationMethodNotSupported
            | IllegalSaslStateError,
        ):
            return (
                f"kafka: {kafka.bootstrap} refuses SASL {kafka.sasl_mechanism or 'PLAIN'} for "
                f"{who}: {_said(cause)} (set KAFKA_SASL_MECHANISM to one the broker enables)"
            )
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = getattr(cause, "verify_message", None) or _said(cause)
            return (
                f"kafka: the broker at {kafka.bootstrap} is not trusted: {reason} "
                "(set KAFKA_SSL_CAFILE to the CA that signed its certificate)"
            )
        if isinstance(cause, ssl.SSLError):
            return (
                f"kafka: TLS with {kafka.bootstrap} failed for {who}: {_said(cause)} "
                "(check KAFKA_SECURITY_PROTOCOL, KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE)"
            )
        if isinstance(cause, TopicAuthorizationFailedError):
            topics = _names(cause) or "a topic"
            return f"kafka: {who} may not {doing or 'use'} topic {topics} ({ACL_FIX})"
        if isinstance(cause, GroupAuthorizationFailedError):
            group = _names(cause) or "its consumer group"
            return f"kafka: {who} may not use consumer group {group} ({ACL_FIX})"
        if isinstance(cause, TransactionalIdAuthorizationFailed):
            return f"kafka: {who} may not use transactional id {_names(cause)} ({ACL_FIX})"
        if isinstance(cause, ClusterAuthorizationFailedError):
            # Mostly an idempotent producer's InitProducerId: Kafka allows it to a principal
            # with WRITE on any topic (KIP-679), so a producer without ACLs meets this first.
            return (
                f"kafka: {who} may not make a cluster-level request such as an idempotent "
                f"producer's (it needs WRITE on its topics; {ACL_FIX})"
            )
    return None


async def diagnose(
    kafka: KafkaConnection, exc: BaseException, doing: Doing | None = None
) -> str | None:
    """:func:`refusal`, and for a secured connection that failed to bootstrap, the reason
    one connection of its own meets (a broker that is down stays None: retry)."""
    line = refusal(kafka, exc, doing)
    if line is not None or not isinstance(exc, KafkaConnectionError):
        return line
    if not (kafka.uses_tls or kafka.uses_sasl):
        return None
    options = kafka.client_options()
    options.pop("bootstrap_servers")
    for host, port in _hosts(kafka.bootstrap):
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                conn = await create_conn(host, port, request_timeout_ms=5000, **options)
        except Exception as probe_exc:
            line = refusal(kafka, probe_exc, doing)
            if line is not None:
                return line
            continue
        conn.close()
    return None


def explain(kafka: KafkaConnection, exc: BaseException, doing: Doing | None = None) -> str | None:
    """:func:`diagnose` for synchronous callers (the command line's error path), whether or
    not an event loop runs in this thread."""
    line = refusal(kafka, exc, doing)
    if line is not None or not isinstance(exc, KafkaConnectionError):
        return line
    if not (kafka.uses_tls or kafka.uses_sasl):
        return None
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(asyncio.run, diagnose(kafka, exc, doing))
        try:
            return future.result(timeout=PROBE_TIMEOUT_S + 5)
        except Exception:
            return None


async def stop_if_refused(
    kafka: KafkaConnection, exc: BaseException, doing: Doing | None = None
) -> None:
    """Raises :class:`KafkaRefused` (one line) if ``exc`` is a refusal; returns otherwise,
    for the caller to re-raise or retry (``except KafkaError as exc: await
    stop_if_refused(kafka, exc); raise``: nothing is added to the path that succeeds)."""
    line = await diagnose(kafka, exc, doing)
    if line is not None:
        raise KafkaRefused(line) from None


@contextlib.asynccontextmanager
async def refusals(kafka: KafkaConnection, doing: Doing | None = None) -> AsyncIterator[None]:
    """Raises :class:`KafkaRefused` (one line) in place of a refusal from the block (a
    client's start); other failures pass through unchanged, to be retried."""
    try:
        yield
    except Exception as exc:
        await stop_if_refused(kafka, exc, doing)
        raise


def _hosts(bootstrap: str) -> list[tuple[str, int]]:
    out = []
    for part in bootstrap.split(","):
        host, _, port = part.strip().rpartition(":")
        if host and port.isdigit():
            out.append((host.strip("[]"), int(port)))
    return out
