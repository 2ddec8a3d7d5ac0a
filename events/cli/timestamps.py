"""Timestamps as ``choreo publish`` takes them: ISO 8601 text with a timezone, ``now`` or
epoch numbers, turned into the epoch units a ``timestamp-millis``/``-micros`` field holds,
and missing ``*_at`` fields (without a default) set to now.

A schema is compiled once into a fixing function that walks only the parts of a payload
that can hold a timestamp (bulk publishing runs it on every record). Schema shapes come
from :class:`events.avro.names.NamedTypes`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from events.avro.names import NamedTypes
from events.cli.payloads import InputError
from events.envelope import utcnow

__all__ = [
    "Fix",
    "FixCompiler",
    "defaults_to_now",
    "normalise_payload",
    "to_epoch",
    "to_timestamp",
]

_PER_SECOND = {"timestamp-millis": 1_000, "timestamp-micros": 1_000_000}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Fix = Callable[[Any, str], Any]


def to_timestamp(value: Any, where: str) -> Any:
    """``now`` or an ISO 8601 string with a timezone becomes a datetime; others pass through
    (epoch milliseconds are valid as they are; the contract check rejects the rest)."""
    if not isinstance(value, str):
        return value
    if value == "now":
        return utcnow()
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(
            f"{where}: expected an ISO 8601 timestamp with a timezone or 'now', got {value!r}"
        ) from None
    if parsed.tzinfo is None:
        raise InputError(f"{where}: timestamp {value!r} needs a timezone (e.g. Z or +02:00)")
    return parsed


def to_epoch(moment: datetime, per_second: int) -> int:
    """What fastavro writes for an aware datetime, by the same integer arithmetic. Done here
    because fastavro's own conversion costs more than the rest of the encoding."""
    delta = moment - _EPOCH
    whole = (delta.days * 86_400 + delta.seconds) * per_second
    return whole + delta.microseconds // (1_000_000 // per_second)


def _timestamp_fix(per_second: int) -> Fix:
    def fix_timestamp(value: Any, where: str) -> Any:
        moment = to_timestamp(value, where)
        if isinstance(moment, datetime) and moment.tzinfo is not None:
            return to_epoch(moment, per_second)
        return moment  # epoch numbers as given; the contract check rejects the rest

    return fix_timestamp


def _now_units(field: Mapping[str, Any], names: NamedTypes) -> int | None:
    """Units per second of a timestamp field named ``*_at`` without a default (filled with
    now when absent), else None."""
    if "default" in field or not str(field["name"]).endswith("_at"):
        return None
    for branch in names.branches(field["type"]):
        kind = names.kind(branch)
        if kind in _PER_SECOND:
            return _PER_SECOND[kind]
    return None


def defaults_to_now(field: Mapping[str, Any], names: NamedTypes) -> bool:
    return _now_units(field, names) is not None


class FixCompiler:
    """Builds, once per schema, a function that turns timestamps given as text (ISO 8601 or
    ``now``) into epoch numbers and fills in missing ``*_at`` fields; it does not walk into
    parts of the schema that hold no timestamp."""

    def __init__(self, names: NamedTypes) -> None:
        self.names = names
        self._open: set[int] = set()  # records being compiled (recursive types)

    def compile(self, schema: Any) -> Fix | None:
        schema = self.names.resolve(schema)
        if isinstance(schema, list):
            return self._union(schema)
        kind = self.names.kind(schema)
        if kind in _PER_SECOND:
            return _timestamp_fix(_PER_SECOND[kind])
        if kind == "record" and id(schema) not in self._open:
            self._open.add(id(schema))
            try:
                return self._record(schema)
            finally:
                self._open.discard(id(schema))
        if kind == "array":
            return _each(self.compile(schema["items"]))
        if kind == "map":
            return _each_value(self.compile(schema["values"]))
        return None

    def _record(self, schema: Mapping[str, Any]) -> Fix | None:
        fixes: list[tuple[str, Fix]] = []
        now: list[tuple[str, int]] = []
        for field in schema["fields"]:
            fix = self.compile(field["type"])
            if fix is not None:
                fixes.append((field["name"], fix))
            units = _now_units(field, self.names)
            if units is not None:
                now.append((field["name"], units))
        if not fixes and not now:
            return None

        def fix_record(datum: Any, where: str) -> Any:
            if not isinstance(datum, dict):
                return datum  # the contract check names the field
            for name, fix in fixes:
                if name in datum:
                    datum[name] = fix(datum[name], f"{where}.{name}" if where else name)
            for name, per_second in now:
                if name not in datum:
                    datum[name] = to_epoch(utcnow(), per_second)
            return datum

        return fix_record

    def _union(self, branches: list[Any]) -> Fix | None:
        resolved = [self.names.resolve(b) for b in branches]
        text = any(self.names.kind(b) == "string" for b in resolved)
        stamps = [_PER_SECOND[k] for b in resolved if (k := self.names.kind(b)) in _PER_SECOND]
        stamp = _timestamp_fix(stamps[0]) if stamps and not text else None
        nested = next(
            (f for b in resolved if not _scalar(b) and (f := self.compile(b)) is not None), None
        )
        if nested is None and stamp is None:
            return None

        def fix_union(datum: Any, where: str) -> Any:
            if isinstance(datum, str):
                return stamp(datum, where) if stamp is not None else datum
            if nested is not None and isinstance(datum, dict | list):
                return nested(datum, where)
            return datum

        return fix_union


def _scalar(schema: Any) -> bool:
    return isinstance(schema, str) or schema["type"] not in ("record", "array", "map")


def _each(fix: Fix | None) -> Fix | None:
    if fix is None:
        return None

    def fix_items(datum: Any, where: str) -> Any:
        if not isinstance(datum, list):
            return datum
        return [fix(item, f"{where}[{i}]") for i, item in enumerate(datum)]

    return fix_items


def _each_value(fix: Fix | None) -> Fix | None:
    if fix is None:
        return None

    def fix_values(datum: Any, where: str) -> Any:
        if not isinstance(datum, dict):
            return datum
        return {k: fix(v, f"{where}.{k}") for k, v in datum.items()}

    return fix_values


def normalise_payload(schema: Mapping[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``payload`` with timestamps (ISO 8601 strings, ``now``, datetimes) as epoch
    numbers, and missing ``*_at`` timestamps set to now. (Publishing fixes its freshly parsed
    payloads in place.)"""
    fix = FixCompiler(NamedTypes(schema)).compile(schema)
    copied = copy.deepcopy(payload)
    return copied if fix is None else dict(fix(copied, ""))
