"""The schema registry, through its Confluent-compatible REST API: subjects, ids, BACKWARD.

choreo registers its catalogue under TopicRecordNameStrategy subjects
(``<topic>-<record full name>``: several event types share a topic, and each type's
versions form one subject whose compatibility the registry enforces) and reads writer
schemas back by id. Any registry speaking the API works: Apicurio's ``/apis/ccompat/v7``
(``choreo registry up``), Confluent's, Karapace.

Why a small client of our own rather than confluent-kafka's ``SchemaRegistryClient`` and
its Avro serializers in the services: those are synchronous and come with librdkafka, a
second Kafka client beside aiokafka; the services already frame Avro with fastavro and need
only five calls of the REST API, over httpx which they already use. confluent-kafka stays
a dev dependency: the interop tests check our bytes against its serializers.

Calls are synchronous (httpx.Client): they run at start-up (the ids a writer needs) and
once per schema id a reader has not seen, which after start-up is only when another
producer registered a new version. That one call runs on the reader's event loop; a
registry that refuses connections answers at once, and one that does not answer holds the
loop for the connect timeout (2 s) per attempt, an attempt per ``RETRY_AFTER_S`` while
such an id waits.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import httpx

from events.catalogue import Catalogue, CatalogueError, SchemaVersion
from events.pausing import DependencyUnavailable

__all__ = [
    "BACKWARD",
    "RegistryClient",
    "RegistryError",
    "RegistryRefused",
    "RegistryUnavailable",
    "register_catalogue",
    "schema_text",
    "subject_for",
]

BACKWARD = "BACKWARD"
_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
_SUBJECT_NOT_FOUND = 40401
_SCHEMA_NOT_FOUND = 40403
_VERSION_NOT_FOUND = 40402
_TIMEOUT = httpx.Timeout(5.0, connect=2.0)
# How long a partition waits on a registry that cannot be asked before its record is read
# again: long enough not to hammer it, short enough that a restart is noticed at once.
RETRY_AFTER_S = 2.0


class RegistryError(Exception):
    """The registry answered something unexpected; the message says what."""


class RegistryRefused(RegistryError):
    """The registry refused a schema (e.g. 409: incompatible with the subject's versions)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class RegistryUnavailable(DependencyUnavailable):
    """The registry cannot be reached or failed (5xx): nothing is wrong with the event.

    A ``DependencyUnavailable`` (not a ``CodecError``): a consumer that meets it reading an
    id it has not seen holds the record's partition back and tries again after
    ``retry_after_s``, as for a handler's dependency (events.pausing); nothing is
    dead-lettered for it."""

    def __init__(self, reason: str, retry_after_s: float = RETRY_AFTER_S) -> None:
        super().__init__("schema registry", retry_after_s, reason)
        self.args = (f"schema registry unavailable: {reason}",)  # no "retry in" at start-up


def subject_for(topic: str, record_fullname: str) -> str:
    """TopicRecordNameStrategy: ``<topic>-<namespace>.<name>``."""
    return f"{topic}-{record_fullname}"


def full_name(raw: dict[str, Any]) -> str:
    name = str(raw.get("name", ""))
    namespace = raw.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


def schema_text(schema: SchemaVersion) -> str:
    """The text choreo registers a version as (the contract file's JSON, compact)."""
    return json.dumps(schema.raw, separators=(",", ":"))


def subject_of(catalogue: Catalogue, schema: SchemaVersion) -> str:
    return subject_for(catalogue.topic_for(schema.event_type), full_name(schema.raw))


class RegistryClient:
    """The five calls of the Confluent-compatible API choreo makes."""

    def __init__(self, url: str, timeout: httpx.Timeout = _TIMEOUT) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            timeout=timeout,
            headers={"Content-Type": _CONTENT_TYPE, "Accept": _CONTENT_TYPE},
        )

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def register(self, subject: str, schema: str) -> int:
        """The id of ``schema`` under ``subject``, registered as a new version if new."""
        body = self._call("POST", f"/subjects/{subject}/versions", {"schema": schema})
        return int(body["id"])

    def lookup(self, subject: str, schema: str) -> int | None:
        """The id of ``schema`` if it is a version of ``subject``, else None."""
        body = self._call("POST", f"/subjects/{subject}", {"schema": schema}, missing=True)
        return None if body is None else int(body["id"])

    def schema(self, schema_id: int) -> str | None:
        """The text of the schema with that id; None when the registry has no such id."""
        body = self._call("GET", f"/schemas/ids/{schema_id}", missing=True)
        if body is None:
            return None
        kind = body.get("schemaType", "AVRO")
        if kind != "AVRO":
            raise RegistryError(f"schema id {schema_id} is a {kind} schema, not Avro")
        return str(body["schema"])

    def set_compatibility(self, subject: str, level: str) -> None:
        self._call("PUT", f"/config/{subject}", {"compatibility": level})

    def compatibility(self, subject: str) -> str | None:
        body = self._call("GET", f"/config/{subject}", missing=True)
        return None if body is None else str(body.get("compatibilityLevel") or "") or None

    def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, missing: bool = False
    ) -> Any:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(f"{self.url}: {type(exc).__name__}: {exc}") from None
        if response.status_code >= 500:
            raise RegistryUnavailable(
                f"schema registry at {self.url} failed: {response.status_code} {_message(response)}"
            )
        if response.status_code == 404 and missing:
            code = _error_code(response)
            if code in (_SUBJECT_NOT_FOUND, _SCHEMA_NOT_FOUND, _VERSION_NOT_FOUND, None):
                return None
        if response.status_code >= 400:
            raise RegistryRefused(
                f"{method} {path}: {response.status_code} {_message(response)}",
                response.status_code,
            )
        try:
            return response.json()
        except ValueError:
            raise RegistryError(
                f"{method} {path}: not a JSON answer: {response.text[:200]}"
            ) from None


def _error_code(response: httpx.Response) -> int | None:
    try:
        code = response.json().get("error_code")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, int) else None


def _message(response: httpx.Response) -> str:
    try:
        doc = response.json()
    except ValueError:
        return " ".join(response.text.split())[:300]
    message = doc.get("message") if isinstance(doc, dict) else None
    return " ".join(str(message or doc).split())[:300]


def register_catalogue(catalogue: Catalogue, url: str) -> list[str]:
    """Registers every version of every event type carried on a topic, in version order,
    under its subject, and sets each subject's compatibility to BACKWARD (before the new
    versions, so the registry checks them as ``choreo schemas check`` does). Returns one
    line per subject saying what was done; a refusal raises ``RegistryRefused`` naming the
    subject and version, with the registry's message."""
    lines = []
    with RegistryClient(url) as client:
        for event_type in catalogue.event_types:
            versions = _versions(catalogue, event_type)
            if not versions:
                continue
            subject = subject_of(catalogue, versions[0])
            new: list[str] = []
            for schema in versions:
                text = schema_text(schema)
                if client.lookup(subject, text) is not None:
                    continue
                if not new and client.compatibility(subject) != BACKWARD:
                    # Set before registering: the registry then checks what is new.
                    _set_backward(client, subject)
                try:
                    schema_id = client.register(subject, text)
                except RegistryRefused as exc:
                    raise RegistryRefused(
                        f"{subject}: {event_type} v{schema.version} refused: {exc}", exc.status
                    ) from None
                new.append(f"v{schema.version} (id {schema_id})")
            if client.compatibility(subject) != BACKWARD:
                _set_backward(client, subject)
            done = f"registered {', '.join(new)}" if new else "up to date"
            lines.append(f"{subject}: {done}; compatibility {BACKWARD}")
    return lines


def _set_backward(client: RegistryClient, subject: str) -> None:
    # A subject that does not exist yet has no config to set on some registries: it is
    # set again after its first version.
    with contextlib.suppress(RegistryRefused):
        client.set_compatibility(subject, BACKWARD)


def _versions(catalogue: Catalogue, event_type: str) -> list[SchemaVersion]:
    """Every version of the type, oldest first; none when no topic carries it (never
    written, so never registered)."""
    try:
        catalogue.topic_for(event_type)
    except CatalogueError:
        return []
    latest = catalogue.latest(event_type)
    return [catalogue.version(event_type, n) for n in range(1, latest.version + 1)]


def writer_ids(catalogue: Catalogue, url: str) -> dict[bytes, int]:
    """The registry id of every version of every event type on a topic, by fingerprint.

    Raises ``RegistryError`` naming ``choreo schemas release`` when one is not registered
    (a process writing the registry format cannot write it), ``RegistryUnavailable`` when
    the registry cannot be asked."""
    ids: dict[bytes, int] = {}
    missing = []
    with RegistryClient(url) as client:
        for event_type in catalogue.event_types:
            for schema in _versions(catalogue, event_type):
                subject = subject_of(catalogue, schema)
                schema_id = client.lookup(subject, schema_text(schema))
                if schema_id is None:
                    missing.append(f"{subject} v{schema.version}")
                else:
                    ids[schema.fingerprint] = schema_id
    if missing:
        shown = ", ".join(missing[:3]) + (
            f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        )
        raise RegistryError(
            f"schemas not registered at {url}: {shown}; run `choreo schemas release` "
            "(SCHEMA_FORMAT=registry registers them)"
        )
    return ids
