"""Why one Avro schema cannot read another: the avro checker plus the project's rules, named
by path (``events.avro.compatibility.reader_problems``)."""

from __future__ import annotations

import copy
import io
from typing import Any

import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from fastavro import schemaless_reader, schemaless_writer
from fastavro.schema import parse_schema

from events.avro.compatibility import parse, reader_problems

NS = "choreo.orders"


def record(name: str, *fields: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": NS, "fields": list(fields), **extra}


def fld(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


def order_created(*extra_fields: dict[str, Any]) -> dict[str, Any]:
    return record(
        "OrderCreated",
        fld("order_id", "string"),
        fld("total_cents", "long"),
        *extra_fields,
    )


def roundtrip(reader: Any, writer: Any, datum: Any) -> Any:
    """Write with the writer schema, read with the reader schema, using fastavro."""
    buf = io.BytesIO()
    schemaless_writer(buf, parse_schema(copy.deepcopy(writer)), datum)
    buf.seek(0)
    return schemaless_reader(buf, parse_schema(copy.deepcopy(writer)), parse_schema(reader))


def assert_ok(reader: Any, writer: Any) -> None:
    assert reader_problems(reader, writer) == []


def single_problem(reader: Any, writer: Any) -> str:
    problems = reader_problems(reader, writer)
    assert len(problems) == 1, problems
    return problems[0]


# ---------------------------------------------------------------------------- records


def test_identical_schemas_are_compatible() -> None:
    assert_ok(order_created(), order_created())


def test_adding_a_required_field_without_default_is_rejected_and_names_the_field() -> None:
    problem = single_problem(order_created(fld("currency", "string")), order_created())
    assert problem == "OrderCreated.currency: reader field has no default and is missing in writer"


def test_adding_an_optional_field_with_null_default_is_accepted() -> None:
    reader = order_created(fld("note", ["null", "string"], default=None))
    assert_ok(reader, order_created())
    datum = {"order_id": "o-1", "total_cents": 5}
    assert roundtrip(reader, order_created(), datum) == {**datum, "note": None}


def test_adding_a_field_with_a_non_null_default_is_accepted() -> None:
    assert_ok(order_created(fld("currency", "string", default="EUR")), order_created())


def test_a_default_that_does_not_fit_the_type_is_rejected() -> None:
    problem = single_problem(order_created(fld("note", "string", default=None)), order_created())
    assert problem.startswith("OrderCreated.note: ")
    assert "default null is not a valid string" in problem


def test_default_for_a_union_may_match_any_branch() -> None:
    assert_ok(order_created(fld("note", ["null", "string"], default="none")), order_created())


def test_removing_a_field_is_accepted() -> None:
    reader = record("OrderCreated", fld("order_id", "string"))
    assert_ok(reader, order_created())
    datum = {"order_id": "o-1", "total_cents": 5}
    assert roundtrip(reader, order_created(), datum) == {"order_id": "o-1"}


def test_field_order_does_not_matter() -> None:
    reader = record("OrderCreated", fld("total_cents", "long"), fld("order_id", "string"))
    assert_ok(reader, order_created())


def test_renamed_field_is_accepted_through_a_reader_field_alias() -> None:
    writer = record("OrderCreated", fld("amount", "long"))
    reader = record("OrderCreated", fld("total_cents", "long", aliases=["amount"]))
    assert_ok(reader, writer)
    assert roundtrip(reader, writer, {"amount": 7}) == {"total_cents": 7}


def test_renamed_field_without_alias_is_rejected() -> None:
    writer = record("OrderCreated", fld("amount", "long"))
    reader = record("OrderCreated", fld("total_cents", "long"))
    assert "OrderCreated.total_cents: reader field has no default" in single_problem(reader, writer)


def test_renamed_record_is_accepted_through_a_reader_alias() -> None:
    writer = record("OrderPlaced", fld("order_id", "string"))
    reader = record("OrderCreated", fld("order_id", "string"), aliases=["OrderPlaced"])
    assert_ok(reader, writer)
    assert roundtrip(reader, writer, {"order_id": "o-1"}) == {"order_id": "o-1"}


def test_record_alias_may_be_a_full_name() -> None:
    writer = {"type": "record", "name": "legacy.Order", "fields": []}
    reader = record("OrderCreated", aliases=["legacy.Order"])
    assert_ok(reader, writer)


def test_renamed_record_without_alias_is_rejected() -> None:
    writer = record("OrderPlaced", fld("order_id", "string"))
    reader = record("OrderCreated", fld("order_id", "string"))
    problem = single_problem(reader, writer)
    assert "choreo.orders.OrderCreated" in problem
    assert "choreo.orders.OrderPlaced" in problem


def test_record_names_are_compared_with_their_namespace() -> None:
    writer = {**order_created(), "namespace": "choreo.billing"}
    assert "full names differ" in single_problem(order_created(), writer)


def test_writer_alias_is_not_used_for_matching() -> None:
    writer = record("OrderPlaced", aliases=["OrderCreated"])
    assert reader_problems(record("OrderCreated"), writer) != []


# ---------------------------------------------------------------------------- primitives


@pytest.mark.parametrize(
    ("writer", "reader"),
    [
        ("int", "long"),
        ("int", "float"),
        ("int", "double"),
        ("long", "float"),
        ("long", "double"),
        ("float", "double"),
        ("string", "bytes"),
        ("bytes", "string"),
    ],
)
def test_allowed_promotions(writer: str, reader: str) -> None:
    assert_ok(reader, writer)
    assert_ok(record("R", fld("x", reader)), record("R", fld("x", writer)))


def test_int_to_long_promotion_reads_the_value() -> None:
    reader = record("R", fld("x", "long"))
    assert roundtrip(reader, record("R", fld("x", "int")), {"x": 42}) == {"x": 42}


@pytest.mark.parametrize(
    ("writer", "reader"),
    [
        ("long", "int"),
        ("double", "float"),
        ("float", "long"),
        ("string", "int"),
        ("boolean", "int"),
        ("null", "string"),
        ("int", "string"),
    ],
)
def test_narrowing_or_unrelated_primitives_are_rejected(writer: str, reader: str) -> None:
    problem = single_problem(record("R", fld("x", reader)), record("R", fld("x", writer)))
    assert problem == f"R.x: reader type {reader} cannot read writer type {writer}"


def test_long_to_int_is_rejected() -> None:
    problem = single_problem(
        order_created() | {"fields": [fld("order_id", "string"), fld("total_cents", "int")]},
        order_created(),
    )
    assert problem == "OrderCreated.total_cents: reader type int cannot read writer type long"


def test_primitive_written_in_object_form_is_the_same_type() -> None:
    assert_ok({"type": "long"}, "int")


# ---------------------------------------------------------------------------- logical types


def test_logical_types_resolve_as_their_underlying_type() -> None:
    writer = record("R", fld("at", {"type": "int", "logicalType": "date"}))
    reader = record("R", fld("at", {"type": "long", "logicalType": "timestamp-millis"}))
    assert_ok(reader, writer)
    assert_ok(record("R", fld("at", "long")), reader)


def test_logical_type_over_an_incompatible_type_is_rejected() -> None:
    writer = record("R", fld("at", {"type": "long", "logicalType": "timestamp-millis"}))
    reader = record("R", fld("at", {"type": "int", "logicalType": "date"}))
    assert "reader type int (date) cannot read writer type long (timestamp-millis)" in (
        single_problem(reader, writer)
    )


def test_decimals_must_agree_on_precision_and_scale() -> None:
    def dec(precision: int, scale: int) -> dict[str, Any]:
        return {"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale}

    assert_ok(record("R", fld("x", dec(10, 2))), record("R", fld("x", dec(10, 2))))
    problem = single_problem(record("R", fld("x", dec(10, 3))), record("R", fld("x", dec(10, 2))))
    assert problem == "R.x: decimal precision/scale differ: reader (10, 3), writer (10, 2)"
    assert_ok(record("R", fld("x", "bytes")), record("R", fld("x", dec(10, 2))))


# ---------------------------------------------------------------------------- enums


STATUS = ["PENDING", "PAID"]


def status(symbols: list[str], **extra: Any) -> dict[str, Any]:
    return record("R", fld("s", {"type": "enum", "name": "Status", "symbols": symbols, **extra}))


def test_enum_symbol_added_is_accepted() -> None:
    assert_ok(status([*STATUS, "SHIPPED"]), status(STATUS))


def test_enum_symbol_removed_is_rejected_and_named() -> None:
    problem = single_problem(status(["PENDING"]), status(STATUS))
    assert problem == (
        "R.s: writer enum symbols PAID are missing in reader enum choreo.orders.Status, "
        "which has no default"
    )


def test_enum_symbol_removed_is_accepted_when_the_reader_has_a_default() -> None:
    reader = status(["UNKNOWN", "PENDING"], default="UNKNOWN")
    assert_ok(reader, status(STATUS))
    assert roundtrip(reader, status(STATUS), {"s": "PAID"}) == {"s": "UNKNOWN"}


def test_enum_names_must_match() -> None:
    reader = record("R", fld("s", {"type": "enum", "name": "State", "symbols": STATUS}))
    assert "full names differ" in single_problem(reader, status(STATUS))


def test_enum_default_must_be_one_of_its_symbols() -> None:
    problems = reader_problems(status(STATUS, default="NOPE"), status(STATUS))
    assert len(problems) == 1
    assert "invalid reader schema" in problems[0]


# ---------------------------------------------------------------------------- fixed


def fixed_field(size: int, name: str = "Hash") -> dict[str, Any]:
    return record("R", fld("h", {"type": "fixed", "name": name, "size": size}))


def test_fixed_with_same_name_and_size_is_accepted() -> None:
    assert_ok(fixed_field(16), fixed_field(16))


def test_fixed_size_change_is_rejected() -> None:
    problem = single_problem(fixed_field(32), fixed_field(16))
    assert problem == "R.h: fixed choreo.orders.Hash size differs: reader 32, writer 16"


def test_fixed_name_change_is_rejected() -> None:
    assert "full names differ" in single_problem(fixed_field(16, "Digest"), fixed_field(16))


def test_fixed_is_not_bytes() -> None:
    problem = single_problem(record("R", fld("h", "bytes")), fixed_field(16))
    assert "cannot read writer type fixed choreo.orders.Hash[16]" in problem


# ---------------------------------------------------------------------------- unions


def test_union_widening_is_accepted() -> None:
    writer = record("R", fld("x", ["null", "string"]))
    reader = record("R", fld("x", ["null", "string", "long"]))
    assert_ok(reader, writer)


def test_union_narrowing_is_rejected() -> None:
    writer = record("R", fld("x", ["null", "string", "long"]))
    reader = record("R", fld("x", ["null", "string"]))
    problem = single_problem(reader, writer)
    assert (
        problem == "R.x: writer union branch long matches no branch of reader union [null, string]"
    )


def test_union_branches_resolve_with_promotion() -> None:
    assert_ok(record("R", fld("x", ["null", "double"])), record("R", fld("x", ["null", "int"])))


def test_making_a_field_optional_is_accepted() -> None:
    reader = record("R", fld("x", ["null", "string"], default=None))
    assert_ok(reader, record("R", fld("x", "string")))
    assert roundtrip(reader, record("R", fld("x", "string")), {"x": "a"}) == {"x": "a"}


def test_making_an_optional_field_required_is_rejected() -> None:
    problem = single_problem(
        record("R", fld("x", "string")), record("R", fld("x", ["null", "string"]))
    )
    assert problem == "R.x: reader type string cannot read writer union branch null"


def test_writer_union_read_by_a_single_type_that_covers_every_branch() -> None:
    assert_ok(record("R", fld("x", "double")), record("R", fld("x", ["int", "long"])))


def test_non_union_writer_must_match_some_reader_branch() -> None:
    problem = single_problem(
        record("R", fld("x", ["null", "string"])), record("R", fld("x", "long"))
    )
    assert problem == "R.x: writer type long matches no branch of reader union [null, string]"


def test_union_branch_records_are_resolved_recursively() -> None:
    def card(*fields: dict[str, Any]) -> dict[str, Any]:
        return {"type": "record", "name": "Card", "fields": list(fields)}

    writer = record("R", fld("pay", ["null", card(fld("last4", "string"))]))
    reader = record("R", fld("pay", ["null", card(fld("last4", "string"), fld("brand", "string"))]))
    assert single_problem(reader, writer) == (
        "R.pay.brand: reader field has no default and is missing in writer"
    )


# ---------------------------------------------------------------------------- arrays and maps


def line(*fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": "record", "name": "OrderLine", "fields": list(fields)}


def test_nested_records_in_arrays_are_checked_with_a_path() -> None:
    writer = order_created(fld("lines", {"type": "array", "items": line(fld("qty", "int"))}))
    reader = order_created(
        fld("lines", {"type": "array", "items": line(fld("qty", "int"), fld("sku", "string"))})
    )
    assert single_problem(reader, writer) == (
        "OrderCreated.lines[].sku: reader field has no default and is missing in writer"
    )


def test_nested_records_in_arrays_accept_compatible_changes() -> None:
    writer = order_created(fld("lines", {"type": "array", "items": line(fld("qty", "int"))}))
    reader = order_created(
        fld(
            "lines",
            {"type": "array", "items": line(fld("qty", "long"), fld("sku", "string", default=""))},
        )
    )
    assert_ok(reader, writer)
    datum = {"order_id": "o", "total_cents": 1, "lines": [{"qty": 2}]}
    assert roundtrip(reader, writer, datum)["lines"] == [{"qty": 2, "sku": ""}]


def test_array_items_are_resolved() -> None:
    assert_ok({"type": "array", "items": "long"}, {"type": "array", "items": "int"})
    problem = single_problem({"type": "array", "items": "int"}, {"type": "array", "items": "long"})
    assert problem == "<root>[]: reader type int cannot read writer type long"


def test_map_values_are_resolved() -> None:
    writer = record("R", fld("m", {"type": "map", "values": "long"}))
    reader = record("R", fld("m", {"type": "map", "values": "int"}))
    assert single_problem(reader, writer) == "R.m{}: reader type int cannot read writer type long"
    assert_ok(writer, reader)


def test_array_is_not_a_map() -> None:
    writer = record("R", fld("m", {"type": "map", "values": "long"}))
    reader = record("R", fld("m", {"type": "array", "items": "long"}))
    assert "cannot read writer type map<long>" in single_problem(reader, writer)


# ---------------------------------------------------------------------------- named references


def test_named_type_references_are_resolved_with_namespaces() -> None:
    def schema(extra: list[dict[str, Any]]) -> dict[str, Any]:
        return record(
            "Shipment",
            fld("from", {"type": "record", "name": "Address", "fields": extra}),
            fld("to", "Address"),
            fld("via", ["null", "choreo.orders.Address"], default=None),
        )

    writer = schema([fld("city", "string")])
    assert_ok(schema([fld("city", "string"), fld("zip", "string", default="")]), writer)
    problems = reader_problems(schema([fld("city", "string"), fld("zip", "string")]), writer)
    assert problems == [
        f"Shipment.{where}.zip: reader field has no default and is missing in writer"
        for where in ("from", "to", "via")
    ]


def test_inner_namespace_applies_to_nested_definitions() -> None:
    schema = record(
        "R",
        fld(
            "a",
            {
                "type": "record",
                "name": "In",
                "namespace": "other",
                "fields": [
                    fld("b", {"type": "enum", "name": "E", "symbols": ["X"]}),
                ],
            },
        ),
        fld("c", "other.E"),
    )
    assert_ok(schema, schema)


def test_unknown_type_reference_is_reported_not_raised() -> None:
    # The wording is the avro parser's (it decides validity); the problem names the type.
    problems = reader_problems(record("R", fld("x", "Missing")), record("R"))
    assert len(problems) == 1, problems
    assert problems[0].startswith("<reader>: invalid reader schema: ")
    assert "Missing" in problems[0]


def test_recursive_types_terminate() -> None:
    def linked(extra: list[dict[str, Any]]) -> dict[str, Any]:
        return record("Node", fld("value", "int"), fld("next", ["null", "Node"]), *extra)

    assert_ok(linked([]), linked([]))
    assert_ok(record("Node", fld("value", "long"), fld("next", ["null", "Node"])), linked([]))
    problems = reader_problems(linked([fld("label", "string")]), linked([]))
    assert problems == ["Node.label: reader field has no default and is missing in writer"]


def test_mutually_recursive_types_terminate() -> None:
    tree = record(
        "Tree",
        fld(
            "children",
            {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Branch",
                    "fields": [fld("tree", "Tree")],
                },
            },
        ),
    )
    assert_ok(tree, tree)


# ---------------------------------------------------------------------------- the avro checker


def _checker_accepts(reader: Any, writer: Any) -> bool:
    verdict = ReaderWriterCompatibilityChecker().get_compatibility(parse(reader), parse(writer))
    return verdict.compatibility is SchemaCompatibilityType.compatible


def dec(precision: int, scale: int) -> dict[str, Any]:
    return {"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale}


@pytest.mark.parametrize(
    ("reader", "writer"),
    [
        (order_created(), {**order_created(), "namespace": "choreo.billing"}),
        (record("R", fld("x", dec(10, 3))), record("R", fld("x", dec(10, 2)))),
        (order_created(fld("note", "string", default=None)), order_created()),
    ],
    ids=["namespace", "decimal", "default"],
)
def test_the_project_rules_reject_what_the_avro_checker_accepts(reader: Any, writer: Any) -> None:
    assert _checker_accepts(reader, writer)
    assert len(reader_problems(reader, writer)) == 1


def test_short_reader_aliases_are_qualified_so_the_checker_accepts_them() -> None:
    writer = record("OrderPlaced", fld("order_id", "string"))
    reader = record("OrderCreated", fld("order_id", "string"), aliases=["OrderPlaced"])
    assert parse(reader).get_prop("aliases") == ["choreo.orders.OrderPlaced"]
    assert _checker_accepts(reader, writer)


def test_whatever_the_avro_checker_rejects_the_gate_rejects() -> None:
    cases = [
        (order_created(fld("currency", "string")), order_created()),
        (record("R", fld("x", "int")), record("R", fld("x", "long"))),
        (status(["PENDING"]), status(STATUS)),
        (fixed_field(32), fixed_field(16)),
        (record("R", fld("x", ["null", "string"])), record("R", fld("x", ["null", "long"]))),
    ]
    for reader, writer in cases:
        assert not _checker_accepts(reader, writer)
        assert reader_problems(reader, writer) != []
