"""Schema compatibility gate for the Avro contract catalogue.

``reader_problems`` applies the Avro specification's schema resolution rules to two schemas
(parsed JSON) and says why data written with the writer schema could not be read with the
reader schema. ``check_catalogue`` walks ``schemas/<context>/<Event>/vN.avsc`` and checks that
every version reads the data of every earlier version (backward-transitive), that the layout is
sound, and that released versions (recorded in a fingerprint lock file) were never edited.
``write_lock`` records the current versions as released.

Deliberate choices, stricter than the specification where that is the safe side:

* named types match by *full* name (or a reader alias naming the writer's full name); the
  specification compares unqualified names, fastavro does too, so anything accepted here is
  accepted by both;
* logical types resolve as their underlying type, except ``decimal`` against ``decimal``,
  which must agree on precision and scale (a rule of the specification);
* a reader field default that is used (the writer lacks the field) must be a valid value of the
  field's type, since it is what consumers get for old data.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

__all__ = [
    "LOCK_FILE_NAME",
    "CatalogueError",
    "Problem",
    "check_catalogue",
    "reader_problems",
    "write_lock",
]

LOCK_FILE_NAME = "fingerprints.lock"
NAMESPACE_PREFIX = "choreo"

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_PROMOTIONS: dict[str, frozenset[str]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VERSION_FILE = re.compile(r"^v([1-9][0-9]*)\.avsc$")
_LOCK_LINE = re.compile(r"^([^/\s]+)/([^/\s]+)/v([1-9][0-9]*) ([0-9a-f]{16})$")
_INT_RANGE = (-(2**31), 2**31 - 1)
_LONG_RANGE = (-(2**63), 2**63 - 1)


# --------------------------------------------------------------------------------------------
# A resolved schema graph: named references point at the same node object (cycles allowed).
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Decimal:
    precision: int
    scale: int


@dataclass(eq=False)
class _Primitive:
    name: str
    logical: str | None = None
    decimal: _Decimal | None = None


@dataclass(eq=False)
class _Field:
    name: str
    type: _Node
    aliases: tuple[str, ...]
    has_default: bool
    default: object


@dataclass(eq=False)
class _Record:
    fullname: str
    aliases: frozenset[str]
    fields: list[_Field] = field(default_factory=list)


@dataclass(eq=False)
class _Enum:
    fullname: str
    aliases: frozenset[str]
    symbols: tuple[str, ...]
    default: str | None


@dataclass(eq=False)
class _Fixed:
    fullname: str
    aliases: frozenset[str]
    size: int
    logical: str | None = None
    decimal: _Decimal | None = None


@dataclass(eq=False)
class _Array:
    items: _Node


@dataclass(eq=False)
class _Map:
    values: _Node


@dataclass(eq=False)
class _Union:
    branches: tuple[_Node, ...]


_Node = _Primitive | _Record | _Enum | _Fixed | _Array | _Map | _Union
_Named = _Record | _Enum | _Fixed


class _SchemaError(Exception):
    """The schema is not a valid Avro schema (as far as resolution needs to know)."""


def _split(fullname: str) -> tuple[str, str]:
    """(namespace, simple name) of a full name."""
    namespace, _, name = fullname.rpartition(".")
    return namespace, name


def _qualify(name: str, namespace: str) -> str:
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


def _check_name(name: str, what: str) -> None:
    if not _NAME.match(name):
        raise _SchemaError(f"invalid {what} {name!r}")


def _check_fullname(fullname: str) -> None:
    for part in fullname.split("."):
        _check_name(part, f"name part in {fullname!r}:")


class _Parser:
    """Turns Avro JSON into a node graph, applying the namespace rules of the specification."""

    def __init__(self) -> None:
        self.names: dict[str, _Named] = {}

    def parse(self, schema: object, namespace: str) -> _Node:
        if isinstance(schema, str):
            return self._reference(schema, namespace)
        if isinstance(schema, list):
            return self._union(schema, namespace)
        if isinstance(schema, dict):
            return self._complex(cast(dict[str, object], schema), namespace)
        raise _SchemaError(f"a schema must be a string, an object or an array, not {schema!r}")

    def _reference(self, name: str, namespace: str) -> _Node:
        if name in _PRIMITIVES:
            return _Primitive(name)
        for candidate in (_qualify(name, namespace), name):
            if candidate in self.names:
                return self.names[candidate]
        raise _SchemaError(f"unknown type {name!r} (named types must be defined before use)")

    def _union(self, branches: list[object], namespace: str) -> _Union:
        nodes: list[_Node] = []
        seen: set[str] = set()
        for branch in branches:
            node = self.parse(branch, namespace)
            if isinstance(node, _Union):
                raise _SchemaError("a union may not immediately contain another union")
            key = node.fullname if isinstance(node, _Record | _Enum | _Fixed) else _kind(node)
            if key in seen:
                raise _SchemaError(f"union contains {key!r} twice")
            seen.add(key)
            nodes.append(node)
        return _Union(tuple(nodes))

    def _complex(self, schema: dict[str, object], namespace: str) -> _Node:
        kind = schema.get("type")
        if isinstance(kind, dict | list):
            return self.parse(kind, namespace)
        if not isinstance(kind, str):
            raise _SchemaError(f"missing or invalid 'type' in {schema!r}")
        if kind in _PRIMITIVES:
            logical = _logical(schema)
            decimal = _decimal(schema) if kind == "bytes" else None
            return _Primitive(kind, logical, decimal)
        if kind in ("record", "error"):
            return self._record(schema, namespace)
        if kind == "enum":
            return self._enum(schema, namespace)
        if kind == "fixed":
            return self._fixed(schema, namespace)
        if kind == "array":
            if "items" not in schema:
                raise _SchemaError("array without 'items'")
            return _Array(self.parse(schema["items"], namespace))
        if kind == "map":
            if "values" not in schema:
                raise _SchemaError("map without 'values'")
            return _Map(self.parse(schema["values"], namespace))
        return self._reference(kind, namespace)

    def _define(self, schema: dict[str, object], namespace: str) -> tuple[str, frozenset[str]]:
        name = schema.get("name")
        if not isinstance(name, str) or not name:
            raise _SchemaError(f"named type without a valid 'name': {schema!r}")
        declared_ns = schema.get("namespace")
        if declared_ns is not None and not isinstance(declared_ns, str):
            raise _SchemaError(f"invalid namespace {declared_ns!r}")
        if "." in name:
            fullname = name
        else:
            ns = declared_ns if declared_ns is not None else namespace
            fullname = _qualify(name, ns)
        _check_fullname(fullname)
        if fullname in _PRIMITIVES:
            raise _SchemaError(f"primitive type name {fullname!r} cannot be redefined")
        if fullname in self.names:
            raise _SchemaError(f"named type {fullname!r} is defined twice")
        own_ns, _ = _split(fullname)
        aliases = schema.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise _SchemaError(f"invalid aliases of {fullname!r}")
        return fullname, frozenset(_qualify(a, own_ns) for a in cast(list[str], aliases))

    def _record(self, schema: dict[str, object], namespace: str) -> _Record:
        fullname, aliases = self._define(schema, namespace)
        record = _Record(fullname, aliases)
        self.names[fullname] = record  # before the fields: a record may refer to itself
        raw_fields = schema.get("fields")
        if not isinstance(raw_fields, list):
            raise _SchemaError(f"record {fullname!r} needs a 'fields' array")
        own_ns, _ = _split(fullname)
        seen: set[str] = set()
        for raw in raw_fields:
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                raise _SchemaError(f"record {fullname!r} has a field without a name: {raw!r}")
            spec = cast(dict[str, object], raw)
            name = cast(str, spec["name"])
            _check_name(name, f"field name in {fullname!r}:")
            if name in seen:
                raise _SchemaError(f"record {fullname!r} has two fields named {name!r}")
            seen.add(name)
            if "type" not in spec:
                raise _SchemaError(f"field {fullname}.{name} has no 'type'")
            field_aliases = spec.get("aliases", [])
            if not isinstance(field_aliases, list) or not all(
                isinstance(a, str) for a in field_aliases
            ):
                raise _SchemaError(f"invalid aliases of field {fullname}.{name}")
            record.fields.append(
                _Field(
                    name=name,
                    type=self.parse(spec["type"], own_ns),
                    aliases=tuple(cast(list[str], field_aliases)),
                    has_default="default" in spec,
                    default=spec.get("default"),
                )
            )
        return record

    def _enum(self, schema: dict[str, object], namespace: str) -> _Enum:
        fullname, aliases = self._define(schema, namespace)
        symbols = schema.get("symbols")
        if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
            raise _SchemaError(f"enum {fullname!r} needs a 'symbols' array of strings")
        for symbol in cast(list[str], symbols):
            _check_name(symbol, f"symbol in enum {fullname!r}:")
        if len(set(symbols)) != len(symbols):
            raise _SchemaError(f"enum {fullname!r} has duplicate symbols")
        default = schema.get("default")
        if default is not None and default not in symbols:
            raise _SchemaError(f"enum {fullname!r} default {default!r} is not one of its symbols")
        node = _Enum(fullname, aliases, tuple(cast(list[str], symbols)), cast(str | None, default))
        self.names[fullname] = node
        return node

    def _fixed(self, schema: dict[str, object], namespace: str) -> _Fixed:
        fullname, aliases = self._define(schema, namespace)
        size = schema.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise _SchemaError(f"fixed {fullname!r} needs a non-negative integer 'size'")
        node = _Fixed(fullname, aliases, size, _logical(schema), _decimal(schema))
        self.names[fullname] = node
        return node


def _logical(schema: dict[str, object]) -> str | None:
    logical = schema.get("logicalType")
    return logical if isinstance(logical, str) else None


def _decimal(schema: dict[str, object]) -> _Decimal | None:
    """The decimal parameters, or None if not a (valid) decimal: invalid ones are ignored."""
    if schema.get("logicalType") != "decimal":
        return None
    precision = schema.get("precision")
    scale = schema.get("scale", 0)
    if not isinstance(precision, int) or not isinstance(scale, int):
        return None
    if isinstance(precision, bool) or isinstance(scale, bool):
        return None
    if precision < 1 or not 0 <= scale <= precision:
        return None
    return _Decimal(precision, scale)


def _parse(schema: object) -> _Node:
    return _Parser().parse(schema, "")


def _kind(node: _Node) -> str:
    if isinstance(node, _Primitive):
        return node.name
    return {
        _Record: "record",
        _Enum: "enum",
        _Fixed: "fixed",
        _Array: "array",
        _Map: "map",
        _Union: "union",
    }[type(node)]


def _describe(node: _Node) -> str:
    """A short, finite description (named types by name, so cycles end)."""
    if isinstance(node, _Primitive):
        if node.decimal is not None:
            return f"{node.name} (decimal({node.decimal.precision}, {node.decimal.scale}))"
        return f"{node.name} ({node.logical})" if node.logical else node.name
    if isinstance(node, _Record):
        return f"record {node.fullname}"
    if isinstance(node, _Enum):
        return f"enum {node.fullname}"
    if isinstance(node, _Fixed):
        return f"fixed {node.fullname}[{node.size}]"
    if isinstance(node, _Array):
        return f"array<{_describe(node.items)}>"
    if isinstance(node, _Map):
        return f"map<{_describe(node.values)}>"
    return "union [" + ", ".join(_describe(b) for b in node.branches) + "]"


# --------------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------------


def _names_match(reader: _Named, writer: _Named) -> bool:
    return writer.fullname == reader.fullname or writer.fullname in reader.aliases


def _mismatch(reader: _Node, writer: _Node, writer_label: str = "writer type") -> str | None:
    """Why two non-union schemas do not *match* (the specification's shallow test), or None."""
    if isinstance(reader, _Primitive) and isinstance(writer, _Primitive):
        if reader.name != writer.name and reader.name not in _PROMOTIONS.get(writer.name, ()):
            return f"reader type {_describe(reader)} cannot read {writer_label} {_describe(writer)}"
        return _decimal_mismatch(reader.decimal, writer.decimal)
    if isinstance(reader, _Array) and isinstance(writer, _Array):
        return None
    if isinstance(reader, _Map) and isinstance(writer, _Map):
        return None
    if (
        isinstance(reader, _Record | _Enum | _Fixed)
        and isinstance(writer, _Record | _Enum | _Fixed)
        and _kind(reader) == _kind(writer)
    ):
        if not _names_match(reader, writer):
            return (
                f"reader {_describe(reader)} does not match {writer_label} {_describe(writer)}: "
                f"full names differ and no reader alias names {writer.fullname}"
            )
        if isinstance(reader, _Fixed) and isinstance(writer, _Fixed):
            if reader.size != writer.size:
                return (
                    f"fixed {reader.fullname} size differs: "
                    f"reader {reader.size}, writer {writer.size}"
                )
            return _decimal_mismatch(reader.decimal, writer.decimal)
        return None
    return f"reader type {_describe(reader)} cannot read {writer_label} {_describe(writer)}"


def _decimal_mismatch(reader: _Decimal | None, writer: _Decimal | None) -> str | None:
    if reader is None or writer is None or reader == writer:
        return None
    return (
        f"decimal precision/scale differ: reader ({reader.precision}, {reader.scale}), "
        f"writer ({writer.precision}, {writer.scale})"
    )


def _valid_default(node: _Node, value: object) -> bool:
    """Whether a JSON default value is a valid value of the schema (data-driven, so finite)."""
    if isinstance(node, _Primitive):
        return _valid_primitive(node.name, value)
    if isinstance(node, _Enum):
        return isinstance(value, str) and value in node.symbols
    if isinstance(node, _Fixed):
        return isinstance(value, str) and len(value) == node.size and _latin1(value)
    if isinstance(node, _Array):
        return isinstance(value, list) and all(_valid_default(node.items, v) for v in value)
    if isinstance(node, _Map):
        return isinstance(value, dict) and all(
            _valid_default(node.values, v) for v in value.values()
        )
    if isinstance(node, _Union):
        return any(_valid_default(b, value) for b in node.branches)
    if not isinstance(value, dict):
        return False
    for f in node.fields:
        if f.name in value:
            if not _valid_default(f.type, value[f.name]):
                return False
        elif not (f.has_default and _valid_default(f.type, f.default)):
            return False
    return True


def _valid_primitive(name: str, value: object) -> bool:
    if name == "null":
        return value is None
    if name == "boolean":
        return isinstance(value, bool)
    if name in ("int", "long"):
        low, high = _INT_RANGE if name == "int" else _LONG_RANGE
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    if name in ("float", "double"):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if name == "bytes":
        return isinstance(value, str) and _latin1(value)
    return isinstance(value, str)


def _latin1(value: str) -> bool:
    return all(ord(c) < 256 for c in value)


class _Resolver:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self._active: set[tuple[int, int]] = set()  # record pairs being checked (cycles)
        self._done: dict[tuple[int, int], list[str]] = {}  # problems of a pair, path-relative

    def report(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def resolve(self, reader: _Node, writer: _Node, path: str) -> None:
        if isinstance(writer, _Union):
            # Any branch may have been written: every one must resolve against the reader.
            for branch in writer.branches:
                if isinstance(reader, _Union):
                    self._into_union(reader, branch, path, "writer union branch")
                else:
                    self._match_then_resolve(reader, branch, path, "writer union branch")
        elif isinstance(reader, _Union):
            self._into_union(reader, writer, path, "writer type")
        else:
            self._match_then_resolve(reader, writer, path, "writer type")

    def _into_union(self, reader: _Union, writer: _Node, path: str, what: str) -> None:
        """The first reader branch that matches the writer is resolved against it."""
        for branch in reader.branches:
            if _mismatch(branch, writer) is None:
                self._resolve_matched(branch, writer, path)
                return
        self.report(
            path, f"{what} {_describe(writer)} matches no branch of reader {_describe(reader)}"
        )

    def _match_then_resolve(self, reader: _Node, writer: _Node, path: str, what: str) -> None:
        reason = _mismatch(reader, writer, what)
        if reason is not None:
            self.report(path, reason)
            return
        self._resolve_matched(reader, writer, path)

    def _resolve_matched(self, reader: _Node, writer: _Node, path: str) -> None:
        if isinstance(reader, _Array) and isinstance(writer, _Array):
            self.resolve(reader.items, writer.items, f"{path}[]")
        elif isinstance(reader, _Map) and isinstance(writer, _Map):
            self.resolve(reader.values, writer.values, f"{path}{{}}")
        elif isinstance(reader, _Enum) and isinstance(writer, _Enum):
            self._enum(reader, writer, path)
        elif isinstance(reader, _Record) and isinstance(writer, _Record):
            self._record(reader, writer, path)

    def _enum(self, reader: _Enum, writer: _Enum, path: str) -> None:
        missing = [s for s in writer.symbols if s not in reader.symbols]
        if missing and reader.default is None:
            self.report(
                path,
                f"writer enum symbols {', '.join(missing)} are missing in reader enum "
                f"{reader.fullname}, which has no default",
            )

    def _record(self, reader: _Record, writer: _Record, path: str) -> None:
        key = (id(reader), id(writer))
        if key in self._active:  # a recursive type: this pair is checked further up
            return
        if key in self._done:  # checked at another path: the same problems, re-rooted here
            self.problems.extend(path + suffix for suffix in self._done[key])
            return
        self._active.add(key)
        start = len(self.problems)
        self._record_fields(reader, writer, path)
        self._active.discard(key)
        self._done[key] = [p[len(path) :] for p in self.problems[start:]]

    def _record_fields(self, reader: _Record, writer: _Record, path: str) -> None:
        by_name = {f.name: f for f in writer.fields}
        for rfield in reader.fields:
            fpath = f"{path}.{rfield.name}"
            wfield = by_name.get(rfield.name)
            if wfield is None:
                wfield = next((by_name[a] for a in rfield.aliases if a in by_name), None)
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


def _root_path(reader: _Node, writer: _Node) -> str:
    for node in (reader, writer):
        if isinstance(node, _Record | _Enum | _Fixed):
            return _split(node.fullname)[1]
    return "<root>"


def reader_problems(reader: object, writer: object) -> list[str]:
    """Why data written with ``writer`` cannot be read with ``reader`` (empty: it can).

    Both schemas are Avro schemas as parsed JSON (dict, list or str). Each problem names the
    path inside the reader's type, e.g. ``OrderCreated.lines[].sku: ...``.
    """
    parsed: list[_Node] = []
    errors: list[str] = []
    for role, schema in (("reader", reader), ("writer", writer)):
        try:
            parsed.append(_parse(schema))
        except _SchemaError as exc:
            errors.append(f"<{role}>: invalid {role} schema: {exc}")
    if errors:
        return errors
    reader_node, writer_node = parsed
    resolver = _Resolver()
    resolver.resolve(reader_node, writer_node, _root_path(reader_node, writer_node))
    return resolver.problems


# --------------------------------------------------------------------------------------------
# The catalogue gate
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the catalogue: the file concerned and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class CatalogueError(ValueError):
    """The catalogue has problems, so the lock file cannot be written."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass
class _Version:
    context: str
    event: str
    number: int
    path: Path
    schema: object | None = None  # None when the file is not a valid schema
    fingerprint: str | None = None

    @property
    def key(self) -> str:
        return f"{self.context}/{self.event}/v{self.number}"


@dataclass
class _Scan:
    problems: list[Problem] = field(default_factory=list)
    versions: dict[tuple[str, str], dict[int, _Version]] = field(default_factory=dict)

    def add(self, path: Path | str, message: str) -> None:
        self.problems.append(Problem(str(path), message))

    def all_versions(self) -> Iterable[_Version]:
        for key in sorted(self.versions):
            by_number = self.versions[key]
            for number in sorted(by_number):
                yield by_number[number]


def _is_layout_dir(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith((".", "_"))


def _scan(root: Path) -> _Scan:
    scan = _Scan()
    if not root.is_dir():
        scan.add(root, "schema root is not a directory")
        return scan
    for stray in sorted(root.rglob("*.avsc")):
        parts = stray.relative_to(root).parts
        if len(parts) != 3 or any(p.startswith((".", "_")) for p in parts[:2]):
            scan.add(stray, "schema file outside the layout <context>/<Event>/vN.avsc")
    for context_dir in sorted(p for p in root.iterdir() if _is_layout_dir(p)):
        for event_dir in sorted(p for p in context_dir.iterdir() if _is_layout_dir(p)):
            versions: dict[int, _Version] = {}
            for file in sorted(event_dir.glob("*.avsc")):
                match = _VERSION_FILE.match(file.name)
                if match is None:
                    scan.add(file, "schema file name must be vN.avsc with N = 1, 2, ...")
                    continue
                version = _Version(context_dir.name, event_dir.name, int(match[1]), file)
                _load(version, scan)
                versions[version.number] = version
            if versions:
                scan.versions[(context_dir.name, event_dir.name)] = versions
    return scan


def _load(version: _Version, scan: _Scan) -> None:
    """Parse one version file; record problems instead of raising."""
    try:
        schema: object = json.loads(version.path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        scan.add(version.path, f"not valid JSON: {exc}")
        return
    try:
        _parse(schema)
        parse_schema(json.loads(json.dumps(schema)))  # fastavro's checks (defaults, ...)
        fp = fingerprint(to_parsing_canonical_form(json.loads(json.dumps(schema))), "CRC-64-AVRO")
    except _SchemaError as exc:
        scan.add(version.path, f"not a valid Avro schema: {exc}")
        return
    except Exception as exc:  # a bad schema must be reported, whatever fastavro raises
        scan.add(version.path, f"not a valid Avro schema: {type(exc).__name__}: {exc}")
        return
    version.schema = schema
    version.fingerprint = fp
    _check_naming(version, scan)


def _check_naming(version: _Version, scan: _Scan) -> None:
    schema = version.schema
    if not isinstance(schema, dict) or schema.get("type") not in ("record", "error"):
        scan.add(version.path, "an event schema must be a record")
        return
    name = schema.get("name")
    if name != version.event:
        scan.add(
            version.path,
            f"record name {name!r} must equal the folder name {version.event!r} "
            "(put the namespace in 'namespace')",
        )
    expected_ns = f"{NAMESPACE_PREFIX}.{version.context}"
    namespace = schema.get("namespace")
    if namespace != expected_ns:
        scan.add(version.path, f"record namespace {namespace!r} must be {expected_ns!r}")


def _check_versions(scan: _Scan) -> None:
    event_contexts: dict[str, str] = {}
    seen_fingerprints: dict[str, _Version] = {}
    for (context, event), by_number in sorted(scan.versions.items()):
        folder = by_number[min(by_number)].path.parent
        if event in event_contexts:
            scan.add(folder, f"event name {event} is also used in context {event_contexts[event]}")
        event_contexts.setdefault(event, context)
        missing = [n for n in range(1, max(by_number) + 1) if n not in by_number]
        for number in missing:
            scan.add(folder / f"v{number}.avsc", "missing version: versions must be v1, v2, ...")
        for number in sorted(by_number):
            newer = by_number[number]
            if newer.schema is None:
                continue
            if newer.fingerprint is not None:
                twin = seen_fingerprints.get(newer.fingerprint)
                if twin is not None:
                    scan.add(
                        newer.path,
                        f"same parsing canonical form (fingerprint) as {twin.key}; "
                        "a new version must change what is written",
                    )
                seen_fingerprints.setdefault(newer.fingerprint, newer)
            for old_number in sorted(n for n in by_number if n < number):
                older = by_number[old_number]
                if older.schema is None:
                    continue
                for message in reader_problems(newer.schema, older.schema):
                    scan.add(newer.path, f"cannot read v{old_number} data: {message}")


def _read_lock(lock_file: Path, scan: _Scan) -> dict[str, str]:
    entries: dict[str, str] = {}
    if not lock_file.exists():
        return entries
    for number, line in enumerate(lock_file.read_text(encoding="utf-8").splitlines(), 1):
        text = line.strip()
        if not text:
            continue
        match = _LOCK_LINE.match(text)
        if match is None:
            scan.add(lock_file, f"line {number}: expected 'context/Event/vN <16 hex digits>'")
            continue
        key, fp = text.split(" ")
        if key in entries and entries[key] != fp:
            scan.add(lock_file, f"line {number}: {key} is locked twice with different fingerprints")
        entries.setdefault(key, fp)
    return entries


def _check_lock(root: Path, lock_file: Path, scan: _Scan) -> dict[str, str]:
    entries = _read_lock(lock_file, scan)
    current = {v.key: v for v in scan.all_versions()}
    for key, locked_fp in sorted(entries.items()):
        version = current.get(key)
        if version is None:
            scan.add(root / f"{key}.avsc", f"released version {key} was deleted (see {lock_file})")
        elif version.fingerprint is None:
            scan.add(version.path, f"released version {key} was edited (it no longer parses)")
        elif version.fingerprint != locked_fp:
            scan.add(
                version.path,
                f"released version {key} was edited: fingerprint {version.fingerprint}, "
                f"locked {locked_fp}; add a new version instead",
            )
    return entries


def _run(root: Path, lock_file: Path | None) -> tuple[_Scan, Path, dict[str, str]]:
    lock = lock_file if lock_file is not None else root / LOCK_FILE_NAME
    scan = _scan(root)
    _check_versions(scan)
    entries = _check_lock(root, lock, scan)
    return scan, lock, entries


def check_catalogue(root: Path, lock_file: Path | None = None) -> list[Problem]:
    """Every problem of the contract catalogue under ``root`` (empty: the gate passes).

    Checks the layout and naming, contiguous versions from v1, that each version reads the data
    of every earlier one, and that versions recorded in the lock file (default
    ``root/fingerprints.lock``) still exist unchanged. Versions not in the lock are unreleased.
    """
    scan, _, _ = _run(root, lock_file)
    return scan.problems


def _sort_key(line: str) -> tuple[str, str, int]:
    context, event, version = line.split(" ")[0].split("/")
    return context, event, int(version[1:])


def write_lock(root: Path, lock_file: Path | None = None) -> list[str]:
    """Record every current version as released; returns the lines added.

    Raises ``CatalogueError`` if ``check_catalogue`` reports any problem (so an edited or
    deleted released version can never be re-locked).
    """
    scan, lock, entries = _run(root, lock_file)
    if scan.problems:
        raise CatalogueError(scan.problems)
    lines = {f"{v.key} {v.fingerprint}" for v in scan.all_versions()}
    added = sorted((line for line in lines if line.split(" ")[0] not in entries), key=_sort_key)
    if added or not lock.exists():
        text = "".join(f"{line}\n" for line in sorted(lines, key=_sort_key))
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=lock.parent, prefix=f".{lock.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            os.replace(tmp, lock)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return added
