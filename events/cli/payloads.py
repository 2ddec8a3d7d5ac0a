"""What ``choreo publish`` reads, as payloads: ``--field`` values, ``--json`` documents and
JSON Lines records, parsed and checked into dicts with errors that name the field; the event
type a name means; the key a payload gives; and one-line JSON for what commands print.

Schema shapes (is a field text, what type a dotted path has) come from
:class:`events.avro.names.NamedTypes`; contract checking is ``events.avro.validate``'s.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple, NoReturn

from events.avro.names import NamedTypes

KEY_FIELDS = ("order_id", "customer_id", "sku")
LINE_KEYS = ("type", "payload", "key", "event_id", "correlation_id")


class InputError(ValueError):
    """One record or argument that cannot be published; the message names the field, and
    ``event_type`` the record's type when it is known."""

    def __init__(self, message: str, event_type: str | None = None) -> None:
        super().__init__(message)
        self.event_type = event_type


class NoKeyError(InputError):
    """No key was given and none can be inferred; the caller says how to give one."""


class UnknownTypeError(InputError):
    """Not an event type of the catalogue; the message lists close matches."""


# --------------------------------------------------------------------------- keys


def infer_key(payload: Mapping[str, Any], field_order: Sequence[str] | None = None) -> str | None:
    """The message key: ``order_id``, else ``customer_id``, else ``sku``, else the first
    field named ``id`` or ``*_id`` (in contract order); None when there is none."""
    for name in KEY_FIELDS:
        text = _key_text(payload.get(name))
        if text:
            return text
    for name in field_order if field_order is not None else list(payload):
        if name == "id" or name.endswith("_id"):
            text = _key_text(payload.get(name))
            if text:
                return text
    return None


def key_field(field_names: Sequence[str]) -> str | None:
    """The field :func:`infer_key` takes the key from, for a contract's fields."""
    for name in (*KEY_FIELDS, *field_names):
        if name in field_names and (name == "id" or name.endswith("_id") or name == "sku"):
            return name
    return None


def _key_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


# --------------------------------------------------------------------------- arguments


def parse_value(text: str, field_schema: Any = None, names: NamedTypes | None = None) -> Any:
    """A ``--field`` value: JSON when it parses, else the text itself. A field whose
    contract type is a string keeps the text as given, so that ids and postal codes such
    as ``75001`` are not turned into numbers."""
    if field_schema is not None:
        names = names or NamedTypes(field_schema)
    if names is not None and field_schema is not None and _is_text(field_schema, names):
        if text == "null" and any(b == "null" for b in names.branches(field_schema)):
            return None
        if text.startswith('"'):
            with contextlib.suppress(ValueError):
                quoted = json.loads(text)
                if isinstance(quoted, str):
                    return quoted
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_fields(
    pairs: Sequence[str],
    schema: Mapping[str, Any] | None = None,
    base: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``name=value`` pairs (dotted names for nested records) into a payload, set on top of
    ``base`` (a ``--json`` document) when one is given."""
    payload: dict[str, Any] = base if base is not None else {}
    names = NamedTypes(schema) if schema is not None else None
    for pair in pairs:
        name, sep, text = pair.partition("=")
        path = name.split(".")
        if not sep or not all(path):
            raise InputError(f"--field expects name=value (dots for nested fields), got {pair!r}")
        field_schema = names.field_type(schema, path) if schema and names else None
        _set_path(payload, path, parse_value(text, field_schema, names))
    return payload


def _is_text(schema: Any, names: NamedTypes) -> bool:
    """A string or enum, or a union of only those and null: its value is taken as text."""
    branches = [b for b in names.branches(schema) if b != "null"]
    # The Avro type, not the logical one: a uuid is a string too.
    types = [b if isinstance(b, str) else b["type"] for b in branches]
    return bool(types) and all(t in ("string", "enum") for t in types)


def _set_path(payload: dict[str, Any], path: Sequence[str], value: Any) -> None:
    node = payload
    for depth, part in enumerate(path[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(path[: depth + 1])
            raise InputError(f"--field {'.'.join(path)}: {where} is already set to {child!r}")
        node = child
    node[path[-1]] = value


_DECODER = json.JSONDecoder()


def parse_json_object(text: str | bytes, what: str = "") -> dict[str, Any]:
    """A JSON object; InputError (prefixed with ``what``) says what is wrong."""
    prefix = f"{what}: " if what else ""
    try:
        # Bytes decoded here, not by json.loads, which guesses the encoding each time.
        doc = _DECODER.decode(text.decode() if isinstance(text, bytes) else text)
    except UnicodeDecodeError:
        raise InputError(f"{prefix}not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{prefix}not valid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{prefix}expected a JSON object, got {_json_kind(doc)}")
    return doc


def _json_kind(value: Any) -> str:
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    return kinds.get(type(value), "null" if value is None else "a number")


class LineRecord(NamedTuple):
    """One line of a ``--file``: which event, its payload and the envelope fields given."""

    event_type: str
    payload: dict[str, Any]
    key: str | None = None
    event_id: str | None = None
    correlation_id: str | None = None


_LINE_KEY_SET = frozenset(LINE_KEYS)
_OPTIONAL_LINE_KEYS = ("key", "event_id", "correlation_id")


def parse_line(text: str | bytes) -> LineRecord:
    """One JSON Lines record; InputError names what is wrong with it."""
    doc = parse_json_object(text.strip())
    if not _LINE_KEY_SET.issuperset(doc):
        unknown = next(k for k in doc if k not in _LINE_KEY_SET)
        raise InputError(f"unknown key {unknown!r} (a line may have {', '.join(LINE_KEYS)})")
    event_type = doc.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise InputError('"type" must name the event type, e.g. "OrderPlaced"')
    payload = doc.get("payload")
    if not isinstance(payload, dict):
        got = "missing" if payload is None else _json_kind(payload)
        raise InputError(f'"payload" must be a JSON object, got {got}', event_type)
    if len(doc) == 2:  # the common case: no envelope fields given
        return LineRecord(event_type, payload)
    extra = [doc.get(k) for k in _OPTIONAL_LINE_KEYS]
    for name, value in zip(_OPTIONAL_LINE_KEYS, extra, strict=True):
        if value is not None and (not isinstance(value, str) or not value):
            raise InputError(f'"{name}" must be a non-empty string', event_type)
    return LineRecord(event_type, payload, *extra)


def resolve_event_type(known: Sequence[str], name: str) -> str:
    """``name`` if it is a known event type; else InputError listing close matches."""
    if name in known:
        return name
    # Compared in lower case, so that "orderplaced" still finds OrderPlaced.
    by_lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.75)
    if close:
        _unknown(name, f"did you mean {', '.join(by_lower[c] for c in close)}?")
    _unknown(name, f"known types: {', '.join(known)}")


def _unknown(name: str, hint: str) -> NoReturn:
    raise UnknownTypeError(f"unknown event type {name!r}; {hint}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=_jsonable, ensure_ascii=False)
