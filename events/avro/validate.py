"""The one payload validator: does a datum fit its Avro schema, and if not, which field.

fastavro's own validator does not name a missing top-level field, accepts unknown keys
(which the writer then drops silently) and accepts malformed uuids (which every reader then
rejects), so this one is stricter and its messages say ``field.path: what is wrong``.

A schema is compiled once into two functions per node: ``ok`` (a yes/no answer, the fast
path ``choreo publish`` runs for every record, and what keeps it as fast as before) and
``explain`` (which walks again only after a no and words the first fault). Both come from
the same compiled tree, so they share every rule. Hand-written because no maintained library
validates against an Avro schema with field paths in its messages.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from events.avro.bounds import INT_RANGE, LONG_RANGE
from events.avro.names import NamedTypes

__all__ = ["Validator", "first_error", "is_uuid"]

Ok = Callable[[Any], bool]
Explain = Callable[[Any], "_Fault | None"]

_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_ABSENT = object()
_FIELD, _INDEX, _KEY = 0, 1, 2


class _Fault:
    """What is wrong, and where relative to the node that found it (innermost step last)."""

    __slots__ = ("steps", "what")

    def __init__(self, what: str) -> None:
        self.what = what
        self.steps: list[tuple[int, object]] = []

    def under(self, kind: int, step: object) -> _Fault:
        self.steps.append((kind, step))
        return self

    def render(self) -> str:
        path = ""
        for kind, step in reversed(self.steps):
            if kind == _FIELD:
                path = f"{path}.{step}" if path else str(step)
            elif kind == _INDEX:
                path = f"{path or 'payload'}[{step}]"
            else:
                path = f"{path or 'payload'}.{step}"
        return f"{path or 'payload'}: {self.what}"


class Validator:
    """Compiled once per schema; ``validator(datum)`` is None or ``field.path: reason``."""

    def __init__(self, schema: Any, names: NamedTypes | None = None) -> None:
        names = names if names is not None else NamedTypes(schema)
        self.ok, self._explain = _Compiler(names).compile(names.root)

    def __call__(self, datum: Any) -> str | None:
        if self.ok(datum):
            return None
        return self.explain(datum)

    def explain(self, datum: Any) -> str | None:
        """The worded check alone (tests compare it with ``ok``)."""
        fault = self._explain(datum)
        return None if fault is None else fault.render()


def first_error(schema: Any, datum: Any) -> str | None:
    """None if ``datum`` fits ``schema``, else the reason (compiles the schema each call)."""
    return Validator(schema)(datum)


class _Compiler:
    def __init__(self, names: NamedTypes) -> None:
        self.names = names
        self._records: dict[str, tuple[Ok, Explain]] = {}

    def compile(self, schema: Any) -> tuple[Ok, Explain]:
        schema = self.names.lookup(schema)
        if isinstance(schema, list):
            return _union([self.compile(b) for b in schema])
        if isinstance(schema, str):
            return _primitive(schema, None)
        kind = schema["type"]
        if kind == "record":
            return self._record(schema)
        if kind == "enum":
            return _enum(schema["symbols"])
        if kind == "array":
            return _array(self.compile(schema["items"]))
        if kind == "map":
            return _map(self.compile(schema["values"]))
        if kind == "fixed":
            return _fixed(schema["size"])
        return _primitive(str(kind), schema.get("logicalType"))

    def _record(self, schema: Mapping[str, Any]) -> tuple[Ok, Explain]:
        name = str(schema["name"])
        if name in self._records:  # a recursive type: go through the finished functions
            return (lambda d: self._records[name][0](d)), (lambda d: self._records[name][1](d))
        self._records[name] = (_never, _unreachable)  # replaced below
        fields = []
        for f in schema["fields"]:
            ok, explain = self.compile(f["type"])
            plain = _plain_type(self.names.lookup(f["type"]))
            fields.append((f["name"], "default" in f, plain, ok, explain))
        known = frozenset(name for name, *_ in fields)

        def ok_record(datum: Any) -> bool:
            if not _is_mapping(datum) or not known.issuperset(datum):
                return False
            for name, optional, plain, ok, _ in fields:
                value = datum.get(name, _ABSENT)
                if value is _ABSENT:
                    if not optional:
                        return False
                elif plain is not None:  # a plain string, bytes or boolean: no call
                    if not isinstance(value, plain):
                        return False
                elif not ok(value):
                    return False
            return True

        def explain_record(datum: Any) -> _Fault | None:
            if not _is_mapping(datum):
                return _Fault(f"expected an object, got {type(datum).__name__}")
            for key in datum:
                if key not in known:
                    return _Fault("unknown field (not in the contract)").under(_FIELD, key)
            for name, optional, _, _, explain in fields:
                if name not in datum:
                    if optional:
                        continue
                    return _Fault("required field is missing").under(_FIELD, name)
                fault = explain(datum[name])
                if fault is not None:
                    return fault.under(_FIELD, name)
            return None

        self._records[name] = (ok_record, explain_record)
        return ok_record, explain_record


def _never(datum: Any) -> bool:
    return False


def _unreachable(datum: Any) -> _Fault | None:
    return _Fault("schema refers to a record that is still being compiled")


def _is_mapping(datum: Any) -> bool:
    # dict first: isinstance against the Mapping ABC is slow, and JSON makes dicts.
    return type(datum) is dict or isinstance(datum, Mapping)


def _plain_type(schema: Any) -> type | None:
    """The Python type that alone decides validity for this schema, if there is one."""
    if isinstance(schema, dict):
        if "logicalType" in schema:
            return None
        schema = schema["type"]
    plain: dict[Any, type] = {"string": str, "bytes": bytes, "boolean": bool}
    return plain.get(schema) if isinstance(schema, str) else None


def _leaf(ok: Ok, why: Callable[[Any], str]) -> tuple[Ok, Explain]:
    return ok, lambda d: None if ok(d) else _Fault(why(d))


def _union(branches: list[tuple[Ok, Explain]]) -> tuple[Ok, Explain]:
    oks = [ok for ok, _ in branches]

    def ok_union(datum: Any) -> bool:
        return any(ok(datum) for ok in oks)

    def explain_union(datum: Any) -> _Fault | None:
        if ok_union(datum):
            return None
        if datum is None:
            return _Fault("required, got null")
        last = branches[-1][1](datum) if branches else None
        return last if last is not None else _Fault("matches no branch of the union")

    return ok_union, explain_union


def _enum(symbols: list[str]) -> tuple[Ok, Explain]:
    known = frozenset(symbols)
    return _leaf(
        lambda d: isinstance(d, str) and d in known, lambda d: f"{d!r} is not one of {symbols}"
    )


def _array(item: tuple[Ok, Explain]) -> tuple[Ok, Explain]:
    item_ok, item_explain = item

    def ok_items(datum: Any) -> bool:
        # map(): no generator frame per item, unlike all(item(x) for x in datum)
        return isinstance(datum, list | tuple) and all(map(item_ok, datum))

    def explain_items(datum: Any) -> _Fault | None:
        if not isinstance(datum, list | tuple):
            return _Fault(f"expected a list, got {type(datum).__name__}")
        for i, value in enumerate(datum):
            fault = item_explain(value)
            if fault is not None:
                return fault.under(_INDEX, i)
        return None

    return ok_items, explain_items


def _map(values: tuple[Ok, Explain]) -> tuple[Ok, Explain]:
    value_ok, value_explain = values

    def ok_values(datum: Any) -> bool:
        return _is_mapping(datum) and all(map(value_ok, datum.values()))

    def explain_values(datum: Any) -> _Fault | None:
        if not _is_mapping(datum):
            return _Fault(f"expected an object, got {type(datum).__name__}")
        for key, value in datum.items():
            fault = value_explain(value)
            if fault is not None:
                return fault.under(_KEY, key)
        return None

    return ok_values, explain_values


def _fixed(size: int) -> tuple[Ok, Explain]:
    return _leaf(
        lambda d: isinstance(d, bytes) and len(d) == size, lambda d: f"expected {size} bytes"
    )


def _primitive(kind: str, logical: str | None) -> tuple[Ok, Explain]:
    def bad(d: Any) -> str:
        return f"expected {logical or kind}, got {type(d).__name__} {d!r:.60}"

    if kind in ("int", "long"):
        return _integer(kind, logical, bad)
    if kind == "string" and logical == "uuid":
        return _leaf(is_uuid, lambda d: f"{d!r} is not a UUID" if isinstance(d, str) else bad(d))
    checks: dict[str, Ok] = {
        "null": lambda d: d is None,
        "boolean": lambda d: isinstance(d, bool),
        "float": _number,
        "double": _number,
        "string": lambda d: isinstance(d, str),
        "bytes": lambda d: isinstance(d, bytes),
    }
    if kind not in checks:
        return _leaf(_never, lambda d: f"unsupported type {kind}")
    return _leaf(checks[kind], bad)


def _integer(kind: str, logical: str | None, bad: Callable[[Any], str]) -> tuple[Ok, Explain]:
    low, high = INT_RANGE if kind == "int" else LONG_RANGE
    stamp = bool(logical and logical.startswith("timestamp"))

    def ok(d: Any) -> bool:
        if stamp and isinstance(d, datetime):
            return d.tzinfo is not None
        return isinstance(d, int) and not isinstance(d, bool) and low <= d <= high

    def why(d: Any) -> str:
        if stamp and isinstance(d, datetime):
            return "timestamp needs a timezone (e.g. 2026-01-01T00:00:00Z)"
        if isinstance(d, int) and not isinstance(d, bool):
            return f"{d} is out of range for {kind}"
        return bad(d)

    return _leaf(ok, why)


def _number(d: Any) -> bool:
    return isinstance(d, int | float) and not isinstance(d, bool)


def is_uuid(d: Any) -> bool:
    """A ``uuid.UUID``, or text that ``uuid.UUID`` accepts (checked fast when canonical)."""
    if isinstance(d, uuid.UUID):
        return True
    if not isinstance(d, str):
        return False
    if _CANONICAL_UUID.fullmatch(d):
        return True
    try:
        uuid.UUID(d)
    except ValueError:
        return False
    return True
