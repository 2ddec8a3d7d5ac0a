"""The Avro contract catalogue: every event type, every version, found by fingerprint.

Contracts live at ``schemas/<context>/<EventName>/vN.avsc``. The topic catalogue
(``schemas/topics.yaml``) says which topic each event type travels on. ``contract_files``
and ``read_contract`` find and read them for both the runtime's ``Catalogue.load`` and the
compatibility gate (events.compat). The topic catalogue also says who produces and who
consumes each topic, from which ``events.acls`` derives the principals' Kafka ACLs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

SCHEMAS_ROOT = Path(__file__).resolve().parent.parent / "schemas"
_VERSION_FILE = re.compile(r"^v([1-9][0-9]*)\.avsc$")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the catalogue: the file concerned and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class CatalogueError(Exception):
    """The contract or topic catalogue is inconsistent. ``problems`` holds every problem the
    compatibility gate found (``events.compat``); the loader raises with its one message."""

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    event_type: str
    context: str
    version: int
    raw: dict[str, Any]
    parsed: Any = field(repr=False)
    fingerprint: bytes  # 8 bytes, little-endian CRC-64-AVRO of the canonical form

    @property
    def field_names(self) -> list[str]:
        return [f["name"] for f in self.raw.get("fields", [])]


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    retention_ms: int
    event_types: tuple[str, ...]
    configs: dict[str, str]
    # Who writes and who reads it: service names, or ``operator`` (the command line).
    producers: tuple[str, ...] = ()
    consumers: tuple[str, ...] = ()

    @property
    def dead_letter(self) -> str:
        return dead_letter_topic(self.name)


@dataclass(frozen=True, slots=True)
class Replication:
    """How topics are replicated on a cluster of at least ``replication_factor`` brokers
    (``replication`` in topics.yaml); a smaller cluster, such as the one-node default,
    gets one replica and the broker's defaults."""

    replication_factor: int = 3
    min_insync_replicas: int = 2

    def configs(self) -> dict[str, str]:
        """What a replicated topic is created with: a write acknowledged by all in-sync
        replicas (acks=all) is on at least ``min_insync_replicas`` brokers, and a replica
        that fell out of sync never becomes leader."""
        return {
            "min.insync.replicas": str(self.min_insync_replicas),
            "unclean.leader.election.enable": "false",
        }


def dead_letter_topic(topic: str) -> str:
    return f"{topic}.dlq"


def schema_fingerprint(raw: dict[str, Any]) -> bytes:
    canonical = to_parsing_canonical_form(raw)
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


@dataclass(frozen=True, slots=True)
class ContractFile:
    """One contract file of the layout ``<context>/<EventName>/vN.avsc``."""

    context: str
    event_type: str
    version: int
    path: Path


def _is_layout_dir(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith((".", "_"))


def contract_files(root: Path, problems: list[Problem] | None = None) -> list[ContractFile]:
    """The contract files under ``root``, by context, event type and file name. A file off
    the layout (or folders starting with ``.`` or ``_``) is left out, and reported in
    ``problems`` when given (the compatibility gate)."""
    found: list[ContractFile] = []
    if not root.is_dir():
        if problems is not None:
            problems.append(Problem(str(root), "schema root is not a directory"))
        return found
    if problems is not None:
        for stray in sorted(root.rglob("*.avsc")):
            parts = stray.relative_to(root).parts
            if len(parts) != 3 or any(p.startswith((".", "_")) for p in parts[:2]):
                message = "schema file outside the layout <context>/<Event>/vN.avsc"
                problems.append(Problem(str(stray), message))
    for context_dir in sorted(p for p in root.iterdir() if _is_layout_dir(p)):
        for event_dir in sorted(p for p in context_dir.iterdir() if _is_layout_dir(p)):
            for file in sorted(event_dir.glob("*.avsc")):
                match = _VERSION_FILE.match(file.name)
                if match is not None:
                    found.append(
                        ContractFile(context_dir.name, event_dir.name, int(match[1]), file)
                    )
                elif problems is not None:
                    message = "schema file name must be vN.avsc with N = 1, 2, ..."
                    problems.append(Problem(str(file), message))
    return found


def read_contract(path: Path) -> Any:
    """A contract file's JSON; a ``CatalogueError`` naming the file if it is not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problem = Problem(str(path), f"not valid JSON: {exc}")
        raise CatalogueError(str(problem), [problem]) from None


class Catalogue:
    """All contracts under one root, indexed by event type and by fingerprint."""

    def __init__(
        self,
        versions: list[SchemaVersion],
        topics: list[TopicSpec],
        replication: Replication | None = None,
    ) -> None:
        self.replication = replication if replication is not None else Replication()
        self._by_fp: dict[bytes, SchemaVersion] = {}
        self._by_type: dict[str, dict[int, SchemaVersion]] = {}
        for sv in versions:
            if sv.fingerprint in self._by_fp:
                other = self._by_fp[sv.fingerprint]
                raise CatalogueError(
                    f"{sv.event_type} v{sv.version} has the same schema as "
                    f"{other.event_type} v{other.version}"
                )
            self._by_fp[sv.fingerprint] = sv
            self._by_type.setdefault(sv.event_type, {})[sv.version] = sv
        self._latest = {t: vs[max(vs)] for t, vs in self._by_type.items()}
        self.topics = {t.name: t for t in topics}
        self._topic_of: dict[str, str] = {}
        for t in topics:
            for et in t.event_types:
                if et not in self._by_type:
                    raise CatalogueError(f"topic {t.name} lists unknown event type {et}")
                if et in self._topic_of:
                    raise CatalogueError(f"event type {et} is listed on two topics")
                self._topic_of[et] = t.name

    @classmethod
    def load(cls, root: Path = SCHEMAS_ROOT, topics_file: Path | None = None) -> Catalogue:
        versions: list[SchemaVersion] = []
        for file in contract_files(root):
            raw = read_contract(file.path)
            if not isinstance(raw, dict) or raw.get("name") != file.event_type:
                raise CatalogueError(f"{file.path}: record name must be {file.event_type}")
            versions.append(
                SchemaVersion(
                    event_type=file.event_type,
                    context=file.context,
                    version=file.version,
                    raw=raw,
                    parsed=parse_schema(raw),
                    fingerprint=schema_fingerprint(raw),
                )
            )
        topics_path = topics_file if topics_file is not None else root / "topics.yaml"
        topics = load_topics(topics_path) if topics_path.exists() else []
        replication = load_replication(topics_path) if topics_path.exists() else None
        return cls(versions, topics, replication)

    def retarget(self, topic_of: dict[str, str], partitions: int = 1) -> Catalogue:
        """The same contracts routed to other topics (tests, isolated environments)."""
        by_topic: dict[str, list[str]] = {}
        for event_type, topic in topic_of.items():
            by_topic.setdefault(topic, []).append(event_type)
        topics = [TopicSpec(t, partitions, -1, tuple(ets), {}) for t, ets in by_topic.items()]
        return Catalogue(list(self._by_fp.values()), topics, self.replication)

    def prefixed(self, prefix: str) -> Catalogue:
        """The same catalogue with every topic name prefixed (one cluster, many envs)."""
        if not prefix:
            return self
        topics = [
            TopicSpec(
                prefix + t.name,
                t.partitions,
                t.retention_ms,
                t.event_types,
                t.configs,
                t.producers,
                t.consumers,
            )
            for t in self.topics.values()
        ]
        return Catalogue(list(self._by_fp.values()), topics, self.replication)

    @property
    def event_types(self) -> list[str]:
        return sorted(self._by_type)

    def latest(self, event_type: str) -> SchemaVersion:
        try:
            return self._latest[event_type]
        except KeyError:
            raise CatalogueError(f"unknown event type {event_type!r}") from None

    def version(self, event_type: str, version: int) -> SchemaVersion:
        try:
            return self._by_type[event_type][version]
        except KeyError:
            raise CatalogueError(f"unknown event type {event_type!r} v{version}") from None

    def by_fingerprint(self, fp: bytes) -> SchemaVersion | None:
        return self._by_fp.get(fp)

    def topic_for(self, event_type: str) -> str:
        try:
            return self._topic_of[event_type]
        except KeyError:
            raise CatalogueError(f"no topic carries event type {event_type!r}") from None


_PARTY = re.compile(r"^[a-z][a-z0-9_-]*$")


def load_topics(path: Path) -> list[TopicSpec]:
    doc = yaml.safe_load(path.read_text()) or {}
    defaults = doc.get("defaults", {})
    specs = []
    for name, body in (doc.get("topics") or {}).items():
        body = body or {}
        specs.append(
            TopicSpec(
                name=name,
                partitions=int(body.get("partitions", defaults.get("partitions", 1))),
                retention_ms=int(body.get("retention_ms", defaults.get("retention_ms", -1))),
                event_types=tuple(body.get("events", [])),
                configs={str(k): str(v) for k, v in (body.get("configs") or {}).items()},
                producers=_parties(path, name, "producers", body),
                consumers=_parties(path, name, "consumers", body),
            )
        )
    return specs


def load_replication(path: Path) -> Replication:
    """The ``replication`` mapping of topics.yaml; Replication's defaults where it is absent."""
    doc = yaml.safe_load(path.read_text()) or {}
    body = doc.get("replication") or {}
    try:
        replication = Replication(**{k: int(v) for k, v in body.items()})
    except (TypeError, ValueError) as exc:
        raise CatalogueError(
            f"{path}: replication takes replication_factor and min_insync_replicas "
            f"(whole numbers): {exc}"
        ) from None
    if not 1 <= replication.min_insync_replicas <= replication.replication_factor:
        raise CatalogueError(
            f"{path}: replication: min_insync_replicas must be 1..replication_factor"
        )
    return replication


def _parties(path: Path, topic: str, key: str, body: dict[str, Any]) -> tuple[str, ...]:
    """A topic's ``producers`` or ``consumers``: distinct names (the ACLs' principals)."""
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CatalogueError(f"{path}: topic {topic}: {key} must be a list of names")
    bad = [v for v in value if not _PARTY.match(v)]
    if bad:
        raise CatalogueError(
            f"{path}: topic {topic}: {key} {', '.join(map(repr, bad))} is not a name "
            "(lower case letters, digits, - and _)"
        )
    if len(set(value)) != len(value):
        raise CatalogueError(f"{path}: topic {topic}: {key} names someone twice")
    return tuple(value)
