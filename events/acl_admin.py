"""The catalogue's ACLs on the broker: describe what is there, create what is missing, report
bindings of choreo's principals that the catalogue does not ask for (drift), as
``events.topics`` does for topics.

Why confluent-kafka: aiokafka's admin client has no ACL API (DescribeAcls, CreateAcls);
confluent-kafka's ``AdminClient`` (librdkafka) has, and takes the same connection through
``KafkaConnection.librdkafka_config()``. It is synchronous (its calls return
``concurrent.futures``), so async callers run :func:`apply_acls` in a thread
(:func:`apply_acls_async`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, cast

from confluent_kafka import KafkaError, KafkaException

# The admin package's documented names, re-exported without ``__all__``, hence the ignore.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from events.acls import Acl, in_environment
from events.kafka import KafkaConnection

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 30.0
# A filter's None matches any name, principal or host (its annotations say str only).
_ANY = cast(str, None)


class AclError(Exception):
    """The broker refused to describe or create ACLs, or did not answer (one line)."""


@dataclass
class AclReport:
    """``authorizer`` False: the broker checks no ACLs (nothing else was done)."""

    authorizer: bool = True
    created: list[Acl] = field(default_factory=list)
    unchanged: list[Acl] = field(default_factory=list)
    extra: list[Acl] = field(default_factory=list)


def apply_acls(
    connection: KafkaConnection,
    wanted: Sequence[Acl],
    principals: Collection[str],
    *,
    prefix: str = "",
    timeout_s: float = REQUEST_TIMEOUT_S,
) -> AclReport:
    """Idempotent: creates the ``wanted`` bindings that are missing and reports the other
    bindings of ``principals`` ("User:<name>") on the resources of the environment
    ``prefix`` as extra; removes nothing."""
    admin = AdminClient(_admin_config(connection))
    existing = _describe(admin, connection, timeout_s)
    if existing is None:
        return AclReport(authorizer=False)
    ours = {acl for acl in existing if acl.principal in principals and in_environment(acl, prefix)}
    wanted_set = set(wanted)
    report = AclReport(
        unchanged=sorted(wanted_set & ours),
        extra=sorted(ours - wanted_set),
    )
    missing = sorted(wanted_set - ours)
    if missing:
        if not _create(admin, connection, missing, timeout_s):
            return AclReport(authorizer=False)
        report.created = missing
    return report


async def apply_acls_async(
    connection: KafkaConnection,
    wanted: Sequence[Acl],
    principals: Collection[str],
    *,
    timeout_s: float = REQUEST_TIMEOUT_S,
) -> AclReport:
    """:func:`apply_acls` in a worker thread, so the event loop keeps running."""
    return await asyncio.to_thread(apply_acls, connection, wanted, principals, timeout_s=timeout_s)


def describe_acls(
    connection: KafkaConnection, *, timeout_s: float = REQUEST_TIMEOUT_S
) -> list[Acl] | None:
    """Every ACL binding on the broker; None when it has no authorizer."""
    return _describe(AdminClient(_admin_config(connection)), connection, timeout_s)


def _admin_config(connection: KafkaConnection) -> dict[str, Any]:
    # librdkafka's own log lines (a refused connection, retried) go to this module's logger,
    # not to stderr, where they would break the CLI's one-line errors.
    return {**connection.librdkafka_config(), "client.id": "choreo-acls", "logger": log}


def _describe(
    admin: AdminClient, connection: KafkaConnection, timeout_s: float
) -> list[Acl] | None:
    every = AclBindingFilter(
        ResourceType.ANY,
        _ANY,
        ResourcePatternType.ANY,
        _ANY,
        _ANY,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    future = admin.describe_acls(every, request_timeout=timeout_s)
    try:
        bindings = _result(future, timeout_s)
    except KafkaException as exc:
        if _code(exc) == KafkaError.SECURITY_DISABLED:
            return None
        raise AclError(_message("describe the ACLs", connection, exc)) from None
    return [_from_binding(b) for b in bindings]


def _create(
    admin: AdminClient, connection: KafkaConnection, acls: list[Acl], timeout_s: float
) -> bool:
    """Creates the bindings; False when the broker has no authorizer (Kafka 4 answers
    DescribeAcls with no bindings then, and only CreateAcls says SECURITY_DISABLED)."""
    futures = admin.create_acls([_to_binding(acl) for acl in acls], request_timeout=timeout_s)
    for binding, future in futures.items():
        try:
            _result(future, timeout_s)
        except KafkaException as exc:
            if _code(exc) == KafkaError.SECURITY_DISABLED:
                return False
            what = f"create the ACL {_from_binding(binding)}"
            raise AclError(_message(what, connection, exc)) from None
    return True


def _result(future: Future[Any], timeout_s: float) -> Any:
    # The request carries its own timeout; this one only bounds a client that never answers.
    try:
        return future.result(timeout=timeout_s + 5)
    except TimeoutError:
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT)) from None


def _code(exc: KafkaException) -> int | None:
    error = exc.args[0] if exc.args else None
    return error.code() if isinstance(error, KafkaError) else None


def _message(what: str, connection: KafkaConnection, exc: KafkaException) -> str:
    code = _code(exc)
    if code in (KafkaError.CLUSTER_AUTHORIZATION_FAILED, KafkaError.TOPIC_AUTHORIZATION_FAILED):
        return (
            f"{connection.principal} may not {what} on {connection.bootstrap}: "
            "run `choreo topics apply` as the broker's admin principal"
        )
    if code in (KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN):
        return f"cannot {what}: the broker at {connection.bootstrap} does not answer"
    error = exc.args[0] if exc.args else exc
    detail = error.str() if isinstance(error, KafkaError) else str(error)
    return f"cannot {what} on {connection.bootstrap}: {detail}"


def _to_binding(acl: Acl) -> AclBinding:
    return AclBinding(
        ResourceType[acl.resource_type],
        acl.resource,
        ResourcePatternType[acl.pattern_type],
        acl.principal,
        acl.host,
        AclOperation[acl.operation],
        AclPermissionType[acl.permission],
    )


def _from_binding(binding: AclBinding) -> Acl:
    return Acl(
        principal=binding.principal,
        resource_type=_name(binding.restype),
        pattern_type=_name(binding.resource_pattern_type),
        resource=binding.name,
        operation=_name(binding.operation),
        permission=_name(binding.permission_type),
        host=binding.host,
    )


def _name(value: Enum | str | int) -> str:
    # AclBinding converts its arguments to these enums; its annotations allow the inputs.
    return value.name if isinstance(value, Enum) else str(value)
