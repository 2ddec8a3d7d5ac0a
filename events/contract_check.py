"""Checks a payload against its Avro schema and names the first offending field.

fastavro's validator does not name a missing top-level field, accepts unknown keys (which
the writer then drops silently) and accepts malformed uuids (which every reader then
rejects). This check is stricter and its messages say ``field.path: what is wrong``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

_INT = (-(2**31), 2**31 - 1)
_LONG = (-(2**63), 2**63 - 1)


def first_error(schema: Any, datum: Any) -> str | None:
    """None if ``datum`` fits ``schema`` (a raw, unparsed Avro schema), else the reason."""
    return _check(schema, datum, "", {}, "")


def _fullname(schema: Mapping[str, Any], namespace: str) -> tuple[str, str]:
    name = str(schema["name"])
    if "." in name:
        return name, name.rsplit(".", 1)[0]
    ns = str(schema.get("namespace", namespace))
    return (f"{ns}.{name}" if ns else name), ns


def _check(schema: Any, datum: Any, path: str, names: dict[str, Any], ns: str) -> str | None:
    where = path or "payload"
    if isinstance(schema, list):
        return _check_union(schema, datum, where, names, ns)
    if isinstance(schema, str):
        if schema in names:
            return _check(names[schema], datum, path, names, ns)
        if f"{ns}.{schema}" in names:
            return _check(names[f"{ns}.{schema}"], datum, path, names, ns)
        return _primitive(schema, None, datum, where)
    kind = schema["type"]
    if kind in ("record", "enum", "fixed"):
        full, ns = _fullname(schema, ns)
        names.setdefault(full, schema)
    if kind == "record":
        if not isinstance(datum, Mapping):
            return f"{where}: expected an object, got {type(datum).__name__}"
        fields = {f["name"]: f for f in schema["fields"]}
        for key in datum:
            if key not in fields:
                return f"{_join(path, str(key))}: unknown field (not in the contract)"
        for name, field in fields.items():
            if name not in datum:
                if "default" in field:
                    continue
                return f"{_join(path, name)}: required field is missing"
            error = _check(field["type"], datum[name], _join(path, name), names, ns)
            if error:
                return error
        return None
    if kind == "enum":
        ok = isinstance(datum, str) and datum in schema["symbols"]
        return None if ok else f"{where}: {datum!r} is not one of {schema['symbols']}"
    if kind == "array":
        if not isinstance(datum, list | tuple):
            return f"{where}: expected a list, got {type(datum).__name__}"
        for i, item in enumerate(datum):
            error = _check(schema["items"], item, f"{where}[{i}]", names, ns)
            if error:
                return error
        return None
    if kind == "map":
        if not isinstance(datum, Mapping):
            return f"{where}: expected an object, got {type(datum).__name__}"
        for key, value in datum.items():
            error = _check(schema["values"], value, f"{where}.{key}", names, ns)
            if error:
                return error
        return None
    if kind == "fixed":
        ok = isinstance(datum, bytes) and len(datum) == schema["size"]
        return None if ok else f"{where}: expected {schema['size']} bytes"
    return _primitive(kind, schema.get("logicalType"), datum, where)


def _check_union(
    branches: list[Any], datum: Any, where: str, names: dict[str, Any], ns: str
) -> str | None:
    errors = []
    for branch in branches:
        error = _check(branch, datum, where, names, ns)
        if error is None:
            return None
        errors.append(error)
    if datum is None:
        return f"{where}: required, got null"
    return errors[-1]


def _primitive(kind: str, logical: str | None, datum: Any, where: str) -> str | None:
    bad = f"{where}: expected {logical or kind}, got {type(datum).__name__} {datum!r:.60}"
    if kind == "null":
        return None if datum is None else bad
    if kind == "boolean":
        return None if isinstance(datum, bool) else bad
    if kind in ("int", "long"):
        if logical and logical.startswith("timestamp") and isinstance(datum, datetime):
            if datum.tzinfo is None:
                return f"{where}: timestamp needs a timezone (e.g. 2026-01-01T00:00:00Z)"
            return None
        if isinstance(datum, bool) or not isinstance(datum, int):
            return bad
        low, high = _INT if kind == "int" else _LONG
        return None if low <= datum <= high else f"{where}: {datum} is out of range for {kind}"
    if kind in ("float", "double"):
        ok = isinstance(datum, int | float) and not isinstance(datum, bool)
        return None if ok else bad
    if kind == "string":
        if logical == "uuid":
            if isinstance(datum, uuid.UUID):
                return None
            try:
                uuid.UUID(str(datum)) if isinstance(datum, str) else None
            except ValueError:
                return f"{where}: {datum!r} is not a UUID"
        return None if isinstance(datum, str) else bad
    if kind == "bytes":
        return None if isinstance(datum, bytes) else bad
    return f"{where}: unsupported type {kind}"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
