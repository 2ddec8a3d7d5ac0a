"""Least-privilege Kafka ACLs derived from the topic catalogue (no I/O here).

Each topic's ``producers`` and ``consumers`` (``schemas/topics.yaml``) become the bindings
that let each principal do exactly its part of the saga and nothing else:

- a service's principal (``User:<service>``) may WRITE (and DESCRIBE) the topics it
  produces; READ (and DESCRIBE) the topics it consumes, plus WRITE on ``<topic>.dlq`` of
  each of them when it dead-letters (``events.dlq`` sends a record of topic X to X.dlq, so
  the dead-letter topic is the consumed topic's twin, not the consumer's own); READ on its
  own consumer group only;
- a faust app (analytics) may also CREATE/READ/WRITE/DESCRIBE the changelog topics it makes
  for its tables, all named ``<app id>-...``, granted as one prefixed binding;
- ``operator`` (the command line) may WRITE the ``*.requests`` topics it produces, READ
  every catalogue topic and dead-letter topic, WRITE a topic whose dead letters it re-drives
  (``choreo dlq redrive``), use the groups of its own readers and DESCRIBE every choreo
  group;
- ``admin`` is a super user of the broker (``super.users``) and has no ACLs.

Idempotent producers need no IDEMPOTENT_WRITE on the cluster: since KIP-679 (Kafka 3.0)
the broker allows InitProducerId to a principal that may WRITE any topic, which every
producer here may.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from events.catalogue import TopicSpec, dead_letter_topic

OPERATOR = "operator"
ADMIN = "admin"

# How a catalogue consumer reads, where it differs from a service's consumer (group
# TOPIC_PREFIX + name, dead letters to <topic>.dlq); tests/unit/test_acls.py checks these
# against the code that joins the groups.
# The query projection keeps its offsets in its database: its reader only names a group
# (events.reading.reader: "<consumer name>-reader"), the same in every environment.
FIXED_GROUPS: dict[str, str] = {"query": "projection-query-reader"}
# faust apps: the group is the app id (TOPIC_PREFIX + name) and prefixes the changelog
# topics faust creates; an unreadable message is skipped, not dead-lettered.
STREAM_APPS = frozenset({"analytics"})
# The operator's own readers: `choreo dlq` (events.dlq_admin) and `choreo replay`
# (events.replay: "replay-<projection>-<generation>[-r<i>]-reader").
OPERATOR_GROUP = "choreo-dlq-reader"
REPLAY_GROUP_PREFIX = "replay-"


@dataclass(frozen=True, order=True)
class Acl:
    """One ACL binding as Kafka's authorizer stores it (names as in its admin API)."""

    principal: str  # "User:orders"
    resource_type: str  # TOPIC, GROUP
    pattern_type: str  # LITERAL, PREFIXED
    resource: str
    operation: str  # READ, WRITE, DESCRIBE, CREATE
    permission: str = "ALLOW"
    host: str = "*"

    def __str__(self) -> str:
        pattern = "" if self.pattern_type == "LITERAL" else f" ({self.pattern_type.lower()})"
        where = "" if self.host == "*" else f" from {self.host}"
        return (
            f"{self.permission} {self.principal} {self.operation} "
            f"{self.resource_type.lower()} {self.resource}{pattern}{where}"
        )


def principal(name: str) -> str:
    """Kafka's name for a service's (or the operator's) SASL user."""
    return f"User:{name}"


def consumer_group(consumer: str, prefix: str) -> str:
    """The consumer group a catalogue consumer uses in the environment ``prefix``."""
    return FIXED_GROUPS.get(consumer, prefix + consumer)


def dead_letters(consumer: str) -> bool:
    """Whether the consumer writes what it cannot apply to ``<topic>.dlq``."""
    return consumer not in STREAM_APPS


def parties(topics: Iterable[TopicSpec]) -> list[str]:
    """Everyone the catalogue names, the operator included: the principals it governs."""
    names = {OPERATOR}
    for spec in topics:
        names.update(spec.producers, spec.consumers)
    return sorted(names)


def in_environment(acl: Acl, prefix: str) -> bool:
    """Whether the binding is on a resource of the environment ``prefix`` (TOPIC_PREFIX):
    its topics and groups, or the groups every environment shares. Bindings on other
    environments' resources, on the same cluster, are theirs, not drift of this one."""
    shared = {*FIXED_GROUPS.values(), OPERATOR_GROUP, REPLAY_GROUP_PREFIX}
    return not prefix or acl.resource.startswith(prefix) or acl.resource in shared


def desired_acls(topics: Iterable[TopicSpec], prefix: str) -> list[Acl]:
    """Every binding the catalogue's principals need, sorted and without repeats.

    ``topics`` are the catalogue's topics as the runtime names them (already prefixed with
    ``prefix``, the environment's TOPIC_PREFIX, which also prefixes the groups)."""
    specs = list(topics)
    out: set[Acl] = set()
    for spec in specs:
        for name in spec.producers:
            out.update(_topic(name, spec.name, "WRITE", "DESCRIBE"))
        for name in spec.consumers:
            out.update(_topic(name, spec.name, "READ", "DESCRIBE"))
            out.add(_group(name, consumer_group(name, prefix), "READ"))
            if dead_letters(name):
                out.update(_topic(name, dead_letter_topic(spec.name), "WRITE", "DESCRIBE"))
            if name in STREAM_APPS:
                out.update(_stream_app(name, prefix))
    out.update(_operator(specs, prefix))
    return sorted(out)


def _operator(specs: list[TopicSpec], prefix: str) -> Iterator[Acl]:
    for spec in specs:
        yield from _topic(OPERATOR, spec.name, "READ", "DESCRIBE")
        yield from _topic(OPERATOR, dead_letter_topic(spec.name), "READ", "DESCRIBE")
        if any(dead_letters(c) for c in spec.consumers):
            yield _acl(OPERATOR, "TOPIC", "LITERAL", spec.name, "WRITE")  # re-drive
        for name in spec.consumers:
            yield _group(OPERATOR, consumer_group(name, prefix), "DESCRIBE")
    yield _group(OPERATOR, OPERATOR_GROUP, "READ")
    yield _acl(OPERATOR, "GROUP", "PREFIXED", REPLAY_GROUP_PREFIX, "READ")


def _stream_app(name: str, prefix: str) -> Iterator[Acl]:
    app_id = prefix + name
    for operation in ("CREATE", "READ", "WRITE", "DESCRIBE"):
        yield _acl(name, "TOPIC", "PREFIXED", f"{app_id}-", operation)


def _topic(name: str, topic: str, *operations: str) -> Iterator[Acl]:
    for operation in operations:
        yield _acl(name, "TOPIC", "LITERAL", topic, operation)


def _group(name: str, group: str, operation: str) -> Acl:
    return _acl(name, "GROUP", "LITERAL", group, operation)


def _acl(name: str, resource_type: str, pattern_type: str, resource: str, operation: str) -> Acl:
    return Acl(principal(name), resource_type, pattern_type, resource, operation)
