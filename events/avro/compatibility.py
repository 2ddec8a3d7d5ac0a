"""Why data written with one Avro schema cannot be read with another.

Avro's rules are decided by the ``avro`` package: its parser says whether each schema is
valid, and its ``ReaderWriterCompatibilityChecker`` whether a reader reads a writer (type
promotions, record fields without defaults, enum symbols, fixed sizes, union branches).
The checker's own report is a set of JSON-pointer locations and messages, not paired with
each other, so ``reader_problems`` walks the two schemas along the specification's
resolution (fields by name or alias, union branches) to name each problem by its path in
the reader, e.g. ``OrderCreated.lines[].sku: ...``, asking the checker at every leaf.

The project's rules, stricter than the specification where that is the safe side, are a
post-check on the same walk:

* named types match by *full* name (or a reader alias naming the writer's full name); the
  specification and the checker compare unqualified names, fastavro does too, so anything
  accepted here is accepted by both;
* ``decimal`` against ``decimal`` must agree on precision and scale;
* a reader field default that is used (the writer lacks the field) must be a valid value of
  the field's type, since it is what consumers get for old data.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator

import avro.errors
import avro.schema
from avro.compatibility import (
    PRIMITIVE_TYPES,
    ReaderWriterCompatibilityChecker,
    SchemaCompatibilityType,
    lookup_writer_field,
)
from avro.schema import (
    ArraySchema,
    BytesDecimalSchema,
    EnumSchema,
    FixedDecimalSchema,
    FixedSchema,
    MapSchema,
    NamedSchema,
    RecordSchema,
    Schema,
    UnionSchema,
)

from events.avro.bounds import INT_RANGE, LONG_RANGE
from events.avro.names import short_name

__all__ = ["InvalidSchema", "parse", "reader_problems"]


class InvalidSchema(ValueError):
    """The schema is not a valid Avro schema; the message says why (the ``avro`` parser's)."""


def parse(schema: object) -> Schema:
    """An ``avro`` schema object of parsed JSON; aliases of named types are qualified with
    the type's namespace (as the specification says) so the checker compares full names."""
    try:
        with warnings.catch_warnings():
            # An unknown logical type falls back to its underlying type, as Avro says.
            warnings.simplefilter("ignore", avro.errors.IgnoredLogicalType)
            parsed = avro.schema.parse(json.dumps(schema))
    except (avro.errors.AvroException, TypeError, ValueError) as exc:
        raise InvalidSchema(str(exc)) from None
    for named in _named_types(parsed):
        aliases = named.get_prop("aliases")
        if isinstance(aliases, list):
            named.set_prop("aliases", [_qualify(a, named.namespace) for a in aliases])
    return parsed


def _qualify(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _named_types(schema: Schema) -> Iterator[NamedSchema]:
    seen: set[int] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, NamedSchema):
            yield node
        if isinstance(node, RecordSchema):
            stack.extend(f.type for f in node.fields)
        elif isinstance(node, ArraySchema):
            stack.append(node.items)
        elif isinstance(node, MapSchema):
            stack.append(node.values)
        elif isinstance(node, UnionSchema):
            stack.extend(node.schemas)


def reader_problems(reader: object, writer: object) -> list[str]:
    """Why data written with ``writer`` cannot be read with ``reader`` (empty: it can).

    Both schemas are Avro schemas as parsed JSON (dict, list or str). Each problem names the
    path inside the reader's type, e.g. ``OrderCreated.lines[].sku: ...``.
    """
    parsed: list[Schema] = []
    errors: list[str] = []
    for role, schema in (("reader", reader), ("writer", writer)):
        try:
            parsed.append(parse(schema))
        except InvalidSchema as exc:
            errors.append(f"<{role}>: invalid {role} schema: {exc}")
    if errors:
        return errors
    reader_schema, writer_schema = parsed
    walk = _Walk()
    walk.resolve(reader_schema, writer_schema, _root_path(reader_schema, writer_schema))
    if not walk.problems and not walk.compatible(reader_schema, writer_schema):
        # The walk is stricter than the checker by design; should it ever miss what the
        # checker finds, the checker's own words still fail the gate.
        verdict = walk.checker.get_compatibility(reader_schema, writer_schema)
        where = ", ".join(sorted(verdict.locations))
        walk.problems.append(f"<root>: {'; '.join(sorted(verdict.messages))} (at {where})")
    return walk.problems


def _root_path(reader: Schema, writer: Schema) -> str:
    for node in (reader, writer):
        if isinstance(node, NamedSchema):
            return short_name(node.fullname)
    return "<root>"


class _Walk:
    def __init__(self) -> None:
        # avro leaves the checker's __init__ unannotated.
        self.checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
        self.problems: list[str] = []
        self._active: set[tuple[int, int]] = set()  # record pairs being checked (cycles)
        self._done: dict[tuple[int, int], list[str]] = {}  # problems of a pair, path-relative

    def compatible(self, reader: Schema, writer: Schema) -> bool:
        verdict = self.checker.get_compatibility(reader, writer)
        return verdict.compatibility is SchemaCompatibilityType.compatible

    def report(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def resolve(self, reader: Schema, writer: Schema, path: str) -> None:
        if isinstance(writer, UnionSchema):
            # Any branch may have been written: every one must resolve against the reader.
            for branch in writer.schemas:
                if isinstance(reader, UnionSchema):
                    self._into_union(reader, branch, path, "writer union branch")
                else:
                    self._match_then_resolve(reader, branch, path, "writer union branch")
        elif isinstance(reader, UnionSchema):
            self._into_union(reader, writer, path, "writer type")
        else:
            self._match_then_resolve(reader, writer, path, "writer type")

    def _into_union(self, reader: UnionSchema, writer: Schema, path: str, what: str) -> None:
        """The first reader branch that matches the writer is resolved against it."""
        for branch in reader.schemas:
            if self._mismatch(branch, writer) is None:
                self._resolve_matched(branch, writer, path)
                return
        self.report(
            path, f"{what} {_describe(writer)} matches no branch of reader {_describe(reader)}"
        )

    def _match_then_resolve(self, reader: Schema, writer: Schema, path: str, what: str) -> None:
        reason = self._mismatch(reader, writer, what)
        if reason is not None:
            self.report(path, reason)
            return
        self._resolve_matched(reader, writer, path)

    def _mismatch(self, reader: Schema, writer: Schema, label: str = "writer type") -> str | None:
        """Why two non-union schemas do not *match* (the specification's shallow test)."""
        cannot = f"reader type {_describe(reader)} cannot read {label} {_describe(writer)}"
        if reader.type in PRIMITIVE_TYPES and writer.type in PRIMITIVE_TYPES:
            if not self.compatible(reader, writer):
                return cannot
            return _decimal_mismatch(reader, writer)
        if reader.type != writer.type:
            return cannot
        if isinstance(reader, NamedSchema) and isinstance(writer, NamedSchema):
            aliases = reader.get_prop("aliases")
            aliased = isinstance(aliases, list) and writer.fullname in aliases
            if writer.fullname != reader.fullname and not aliased:
                return (
                    f"reader {_describe(reader)} does not match {label} {_describe(writer)}: "
                    f"full names differ and no reader alias names {writer.fullname}"
                )
        if isinstance(reader, FixedSchema) and isinstance(writer, FixedSchema):
            if not self.compatible(reader, writer):  # names match, so the size differs
                return (
                    f"fixed {reader.fullname} size differs: "
                    f"reader {reader.size}, writer {writer.size}"
                )
            return _decimal_mismatch(reader, writer)
        return None

    def _resolve_matched(self, reader: Schema, writer: Schema, path: str) -> None:
        if isinstance(reader, ArraySchema) and isinstance(writer, ArraySchema):
            self.resolve(reader.items, writer.items, f"{path}[]")
        elif isinstance(reader, MapSchema) and isinstance(writer, MapSchema):
            self.resolve(reader.values, writer.values, f"{path}{{}}")
        elif isinstance(reader, EnumSchema) and isinstance(writer, EnumSchema):
            if not self.compatible(reader, writer):
                missing = [s for s in writer.symbols if s not in reader.symbols]
                self.report(
                    path,
                    f"writer enum symbols {', '.join(missing)} are missing in reader enum "
                    f"{reader.fullname}, which has no default",
                )
        elif isinstance(reader, RecordSchema) and isinstance(writer, RecordSchema):
            self._record(reader, writer, path)

    def _record(self, reader: RecordSchema, writer: RecordSchema, path: str) -> None:
        key = (id(reader), id(writer))
        if key in self._active:  # a recursive type: this pair is checked further up
            return
        if key in self._done:  # checked at another path: the same problems, re-rooted here
            self.problems.extend(path + suffix for suffix in self._done[key])
            return
        self._active.add(key)
        start = len(self.problems)
        for rfield in reader.fields:
            fpath = f"{path}.{rfield.name}"
            wfield = lookup_writer_field(writer_schema=writer, reader_field=rfield)
            if wfield is not None:
                self.resolve(rfield.type, wfield.type, fpath)
            elif not rfield.has_default:
                self.report(fpath, "reader field has no default and is missing in writer")
            elif not _valid_default(rfield.type, rfield.default):
                self.report(
                    fpath,
                    f"reader field is missing in writer and its default "
                    f"{json.dumps(rfield.default)} is not a valid {_describe(rfield.type)}",
                )
        self._active.discard(key)
        self._done[key] = [p[len(path) :] for p in self.problems[start:]]


def _decimal(schema: Schema) -> tuple[int, int] | None:
    if isinstance(schema, BytesDecimalSchema | FixedDecimalSchema):
        return schema.precision, schema.scale
    return None


def _decimal_mismatch(reader: Schema, writer: Schema) -> str | None:
    r, w = _decimal(reader), _decimal(writer)
    if r is None or w is None or r == w:
        return None
    return f"decimal precision/scale differ: reader {r}, writer {w}"


def _describe(schema: Schema) -> str:
    """A short, finite description (named types by name, so cycles end)."""
    if isinstance(schema, FixedSchema):
        return f"fixed {schema.fullname}[{schema.size}]"
    if isinstance(schema, NamedSchema):
        return f"{schema.type} {schema.fullname}"
    if isinstance(schema, ArraySchema):
        return f"array<{_describe(schema.items)}>"
    if isinstance(schema, MapSchema):
        return f"map<{_describe(schema.values)}>"
    if isinstance(schema, UnionSchema):
        return "union [" + ", ".join(_describe(b) for b in schema.schemas) + "]"
    decimal = _decimal(schema)
    if decimal is not None:
        return f"{schema.type} (decimal({decimal[0]}, {decimal[1]}))"
    logical = schema.get_prop("logicalType")
    return f"{schema.type} ({logical})" if isinstance(logical, str) else str(schema.type)


def _valid_default(schema: Schema, value: object) -> bool:
    """Whether a JSON default value is a valid value of the schema (data-driven, so finite)."""
    if isinstance(schema, EnumSchema):
        return isinstance(value, str) and value in schema.symbols
    if isinstance(schema, FixedSchema):
        return isinstance(value, str) and len(value) == schema.size and _latin1(value)
    if isinstance(schema, ArraySchema):
        return isinstance(value, list) and all(_valid_default(schema.items, v) for v in value)
    if isinstance(schema, MapSchema):
        return isinstance(value, dict) and all(
            _valid_default(schema.values, v) for v in value.values()
        )
    if isinstance(schema, UnionSchema):
        return any(_valid_default(b, value) for b in schema.schemas)
    if isinstance(schema, RecordSchema):
        if not isinstance(value, dict):
            return False
        for f in schema.fields:
            if f.name in value:
                if not _valid_default(f.type, value[f.name]):
                    return False
            elif not (f.has_default and _valid_default(f.type, f.default)):
                return False
        return True
    return _valid_primitive(str(schema.type), value)


def _valid_primitive(name: str, value: object) -> bool:
    if name == "null":
        return value is None
    if name == "boolean":
        return isinstance(value, bool)
    if name in ("int", "long"):
        low, high = INT_RANGE if name == "int" else LONG_RANGE
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    if name in ("float", "double"):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if name == "bytes":
        return isinstance(value, str) and _latin1(value)
    return isinstance(value, str)


def _latin1(value: str) -> bool:
    return all(ord(c) < 256 for c in value)
