"""The named types of one Avro schema, resolved by fastavro's parser.

``fastavro.parse_schema`` applies the specification's namespace rules: in what it returns
every named type's ``name`` is its full name and every reference is a full name, and the
``named_schemas`` it fills maps each full name to its definition. The validator and the
CLI walk that form, so no walker of ours needs to track namespaces.
"""

from __future__ import annotations

import copy
from typing import Any

from fastavro import parse_schema

__all__ = ["NamedTypes", "short_name"]

_PARSE_MARKERS = ("__fastavro_parsed", "__named_schemas")


class NamedTypes:
    """A schema with its names qualified (``root``) and its named types by full name.

    Raises fastavro's errors (``SchemaParseException``, ``UnknownType``) for an invalid
    schema; the catalogue's schemas are parsed by fastavro when they are loaded anyway."""

    def __init__(self, schema: Any) -> None:
        self.types: dict[str, Any] = {}
        parsed = parse_schema(copy.deepcopy(schema), named_schemas=self.types)
        if isinstance(parsed, dict):
            # fastavro's markers that the schema is parsed: not part of the schema.
            parsed = {k: v for k, v in parsed.items() if k not in _PARSE_MARKERS}
            if parsed.get("name") in self.types:
                self.types[parsed["name"]] = parsed
        self.root: Any = parsed

        # The schema as written refers to types by their short names too; the CLI walks it.
        self._short: dict[str, Any] = {}
        for fullname, definition in self.types.items():
            self._short.setdefault(short_name(fullname), definition)

    def lookup(self, schema: Any) -> Any:
        """The definition behind a full (else short) name, or the schema itself."""
        if isinstance(schema, str):
            return self.types.get(schema) or self._short.get(schema, schema)
        return schema

    def resolve(self, schema: Any) -> Any:
        """:meth:`lookup`, also looking through ``{"type": <name or definition>}``."""
        schema = self.lookup(schema)
        while isinstance(schema, dict) and isinstance(schema.get("type"), dict | list):
            schema = self.lookup(schema["type"])
        return schema

    # The walks below serve whoever reads a schema's shape rather than a datum (the CLI's
    # --field parsing, its timestamp fixing and its field listing).

    def kind(self, schema: Any) -> str:
        """``string``, ``record``, ``timestamp-millis``, ``union``... of a schema, resolved."""
        schema = self.resolve(schema)
        if isinstance(schema, list):
            return "union"
        if isinstance(schema, str):
            return schema
        return str(schema.get("logicalType") or schema["type"])

    def branches(self, schema: Any) -> list[Any]:
        """A union's branches, each resolved (any other schema: itself, resolved, alone)."""
        schema = self.resolve(schema)
        return [self.resolve(b) for b in schema] if isinstance(schema, list) else [schema]

    def record_of(self, schema: Any) -> dict[str, Any] | None:
        """The record a schema is, or the first record branch of a union; else None."""
        for branch in self.branches(schema):
            if isinstance(branch, dict) and branch.get("type") == "record":
                return branch
        return None

    def element(self, schema: Any) -> Any:
        """What an array or map (or a union's first array or map branch) holds, resolved;
        any other schema: itself."""
        for branch in self.branches(schema):
            if isinstance(branch, dict) and branch.get("type") in ("array", "map"):
                return self.resolve(branch.get("items", branch.get("values")))
        return schema

    def field_type(self, schema: Any, path: list[str] | tuple[str, ...]) -> Any | None:
        """The schema of a path of field names through nested records, or None if none."""
        for part in path:
            record = self.record_of(schema)
            if record is None:
                return None
            schema = next((f["type"] for f in record["fields"] if f["name"] == part), None)
            if schema is None:
                return None
        return schema


def short_name(fullname: str) -> str:
    """``Address`` of ``choreo.orders.Address``."""
    return fullname.rpartition(".")[2]
