"""``choreo events``: the catalogue's event types with version, topic and fields, or one type
in detail (its fields' docs, nested records' fields, the key it is published under), as text
or JSON; and the catalogue as the commands load it.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any, TypeVar

from events.avro.names import NamedTypes, short_name
from events.catalogue import Catalogue, CatalogueError
from events.cli.errors import CliError
from events.cli.output import add_output_option
from events.cli.payloads import InputError, compact, key_field, resolve_event_type
from events.cli.timestamps import defaults_to_now
from events.settings import PlatformSettings

__all__ = ["field_line", "load_catalogue", "register", "type_name"]

_P = TypeVar("_P", bound=argparse.ArgumentParser)


def load_catalogue(settings: PlatformSettings) -> Catalogue:
    """The contracts, topics prefixed as configured; CliError when they cannot be loaded."""
    try:
        return Catalogue.load(settings.schemas_dir).prefixed(settings.topic_prefix)
    except (CatalogueError, OSError, ValueError) as exc:
        raise CliError(f"cannot load the contracts from {settings.schemas_dir}: {exc}") from None


def type_name(schema: Any, names: NamedTypes) -> str:
    """A short human name: ``string``, ``uuid``, ``array<OrderLine>``, ``string?``."""
    resolved = names.resolve(schema)
    if isinstance(resolved, list):
        inner = [type_name(b, names) for b in resolved if names.resolve(b) != "null"]
        joined = " | ".join(inner)
        return f"{joined}?" if len(inner) < len(resolved) else joined
    if isinstance(resolved, str):
        return resolved
    kind = resolved["type"]
    if kind in ("record", "enum", "fixed"):
        return short_name(str(resolved["name"]))
    if kind == "array":
        return f"array<{type_name(resolved['items'], names)}>"
    if kind == "map":
        return f"map<{type_name(resolved['values'], names)}>"
    return str(resolved.get("logicalType") or kind)


def field_line(field: Mapping[str, Any], names: NamedTypes) -> str:
    """``name: type`` and how it may be left out."""
    notes = []
    if "default" in field:
        default = field["default"]
        notes.append("optional, default null" if default is None else f"default {compact(default)}")
    elif defaults_to_now(field, names):
        notes.append("now if omitted")
    text = f"{field['name']}: {type_name(field['type'], names)}"
    return f"{text} ({', '.join(notes)})" if notes else text


def _events(args: argparse.Namespace, settings: PlatformSettings) -> int:
    catalogue = load_catalogue(settings)
    as_json = args.output == "json"
    if args.event_type is None:
        for event_type in catalogue.event_types:
            if as_json:
                print(compact(_event_json(catalogue, event_type)))
            else:
                _print_summary(catalogue, event_type)
        return 0
    try:
        event_type = resolve_event_type(catalogue.event_types, args.event_type)
    except InputError as exc:
        raise CliError(str(exc)) from None
    if as_json:
        print(compact(_event_json(catalogue, event_type, detail=True)))
    else:
        _print_details(catalogue, event_type)
    return 0


def _event_json(catalogue: Catalogue, event_type: str, *, detail: bool = False) -> dict[str, Any]:
    """What the text listing says of a type (and with ``detail``, what the detail view
    says, plus the whole Avro schema of its latest version)."""
    schema = catalogue.latest(event_type)
    names = NamedTypes(schema.raw)
    fields = [
        {
            "name": f["name"],
            "type": type_name(f["type"], names),
            **({"default": f["default"]} if "default" in f else {}),
        }
        for f in schema.raw["fields"]
    ]
    doc: dict[str, Any] = {
        "event_type": event_type,
        "version": schema.version,
        "topic": _topic_of(catalogue, event_type),
        "fields": fields,
    }
    if detail:
        doc |= {
            "context": schema.context,
            "versions": [
                v for v in range(1, schema.version + 1) if _has_version(catalogue, event_type, v)
            ],
            "key": key_field(schema.field_names),
            "schema": schema.raw,
        }
    return doc


def _topic_of(catalogue: Catalogue, event_type: str) -> str:
    try:
        return catalogue.topic_for(event_type)
    except CatalogueError:
        return "(no topic)"


def _print_summary(catalogue: Catalogue, event_type: str) -> None:
    schema = catalogue.latest(event_type)
    names = NamedTypes(schema.raw)
    fields = ", ".join(field_line(f, names) for f in schema.raw["fields"])
    print(f"{event_type} v{schema.version} -> {_topic_of(catalogue, event_type)}: {fields}")


def _print_details(catalogue: Catalogue, event_type: str) -> None:
    schema = catalogue.latest(event_type)
    names = NamedTypes(schema.raw)
    key = key_field(schema.field_names)
    versions = [
        str(v) for v in range(1, schema.version + 1) if _has_version(catalogue, event_type, v)
    ]
    print(
        f"{event_type} v{schema.version} ({schema.context}) -> {_topic_of(catalogue, event_type)}"
    )
    if schema.raw.get("doc"):
        print(f"  {schema.raw['doc']}")
    print(f"  versions: {', '.join(versions)}; key: {key or 'none inferred, give --key'}")
    print("  fields:")
    for line in _field_lines(schema.raw, names, "    ", set()):
        print(line)


def _has_version(catalogue: Catalogue, event_type: str, version: int) -> bool:
    try:
        catalogue.version(event_type, version)
    except CatalogueError:
        return False
    return True


def _field_lines(
    record: Mapping[str, Any], names: NamedTypes, indent: str, seen: set[int]
) -> list[str]:
    """One line per field, nested records' fields indented under them (each record once)."""
    seen = seen | {id(record)}
    lines = []
    for field in record["fields"]:
        doc = f"  # {field['doc']}" if field.get("doc") else ""
        lines.append(f"{indent}{field_line(field, names)}{doc}")
        nested = names.record_of(names.element(field["type"]))
        if nested is not None and id(nested) not in seen:
            lines += _field_lines(nested, names, indent + "  ", seen)
    return lines


def register(sub: argparse._SubParsersAction[_P]) -> None:
    """Adds ``choreo events`` to the sub-commands."""
    events = sub.add_parser(
        "events",
        help="list event types with version, topic and fields",
        description="List the catalogue's event types, or show one in detail.",
    )
    events.add_argument("event_type", nargs="?", metavar="TYPE", help="show this type in detail")
    add_output_option(events)
    events.set_defaults(run=_events)
