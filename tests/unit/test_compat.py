"""The schema compatibility gate: Avro resolution rules and the catalogue checks."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest
from fastavro import schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from events.compat import (
    CatalogueError,
    Problem,
    check_catalogue,
    reader_problems,
    write_lock,
)

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
    problems = reader_problems(record("R", fld("x", "Missing")), record("R"))
    assert problems == [
        "<reader>: invalid reader schema: unknown type 'Missing' (named types must be defined "
        "before use)"
    ]


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


# ---------------------------------------------------------------------------- catalogue


def write(root: Path, rel: str, schema: Any) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(schema if isinstance(schema, str) else json.dumps(schema, indent=2))
    return path


def v1() -> dict[str, Any]:
    return order_created()


def v2_good() -> dict[str, Any]:
    return order_created(fld("note", ["null", "string"], default=None))


def v2_bad() -> dict[str, Any]:
    return order_created(fld("currency", "string"))


def messages(problems: list[Problem]) -> list[str]:
    return [p.message for p in problems]


@pytest.fixture
def catalogue(tmp_path: Path) -> Path:
    root = tmp_path / "schemas"
    write(root, "orders/OrderCreated/v1.avsc", v1())
    write(root, "orders/OrderCreated/v2.avsc", v2_good())
    return root


def test_good_two_version_catalogue_passes(catalogue: Path) -> None:
    assert check_catalogue(catalogue) == []


def test_empty_catalogue_passes(tmp_path: Path) -> None:
    assert check_catalogue(tmp_path) == []


def test_bad_v2_is_reported_against_v1(catalogue: Path) -> None:
    v2 = write(catalogue, "orders/OrderCreated/v2.avsc", v2_bad())
    assert check_catalogue(catalogue) == [
        Problem(
            str(v2),
            "cannot read v1 data: OrderCreated.currency: reader field has no default and is "
            "missing in writer",
        )
    ]


def test_compatibility_is_transitive(catalogue: Path) -> None:
    # v3 makes `note` required: v2 data may hold null there, v1 data has no `note` at all.
    v3 = order_created(fld("note", "string"))
    path = write(catalogue, "orders/OrderCreated/v3.avsc", v3)
    problems = check_catalogue(catalogue)
    assert {p.path for p in problems} == {str(path)}
    assert any(m.startswith("cannot read v1 data: ") for m in messages(problems))
    assert any(m.startswith("cannot read v2 data: ") for m in messages(problems))


def test_gap_in_versions_is_reported(tmp_path: Path) -> None:
    write(tmp_path, "orders/OrderCreated/v1.avsc", v1())
    write(tmp_path, "orders/OrderCreated/v3.avsc", v2_good())
    problems = check_catalogue(tmp_path)
    assert problems == [
        Problem(
            str(tmp_path / "orders/OrderCreated/v2.avsc"),
            "missing version: versions must be v1, v2, ...",
        )
    ]


def test_catalogue_must_start_at_v1(tmp_path: Path) -> None:
    write(tmp_path, "orders/OrderCreated/v2.avsc", v1())
    assert messages(check_catalogue(tmp_path)) == ["missing version: versions must be v1, v2, ..."]


def test_invalid_json_is_a_problem_not_a_crash(catalogue: Path) -> None:
    path = write(catalogue, "orders/OrderCreated/v2.avsc", '{"type": "record", ')
    problems = check_catalogue(catalogue)
    assert len(problems) == 1
    assert problems[0].path == str(path)
    assert problems[0].message.startswith("not valid JSON: ")


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "record", "name": "OrderCreated", "namespace": NS},
        order_created(fld("x", "NoSuchType")),
        order_created(fld("x", "int", default="zero")),
        order_created(fld("order_id", "long")),
        {"type": "enum", "name": "OrderCreated", "namespace": NS, "symbols": ["A", "A"]},
        "not-a-type",
    ],
    ids=["no-fields", "unknown-type", "bad-default", "duplicate-field", "dup-symbols", "string"],
)
def test_invalid_avro_is_a_problem_not_a_crash(tmp_path: Path, schema: Any) -> None:
    path = write(tmp_path, "orders/OrderCreated/v1.avsc", json.dumps(schema))
    problems = check_catalogue(tmp_path)
    assert len(problems) == 1, problems
    assert problems[0].path == str(path)
    assert problems[0].message.startswith("not a valid Avro schema: ")


def test_record_name_must_equal_the_folder_name(tmp_path: Path) -> None:
    write(tmp_path, "orders/OrderPlaced/v1.avsc", v1())
    assert messages(check_catalogue(tmp_path)) == [
        "record name 'OrderCreated' must equal the folder name 'OrderPlaced' "
        "(put the namespace in 'namespace')"
    ]


def test_record_namespace_follows_the_context(tmp_path: Path) -> None:
    write(tmp_path, "payments/OrderCreated/v1.avsc", v1())
    assert messages(check_catalogue(tmp_path)) == [
        "record namespace 'choreo.orders' must be 'choreo.payments'"
    ]


def test_event_schema_must_be_a_record(tmp_path: Path) -> None:
    write(tmp_path, "orders/OrderCreated/v1.avsc", {"type": "array", "items": "int"})
    assert messages(check_catalogue(tmp_path)) == ["an event schema must be a record"]


def test_badly_named_and_misplaced_files_are_reported(tmp_path: Path) -> None:
    write(tmp_path, "orders/OrderCreated/v1.avsc", v1())
    bad_name = write(tmp_path, "orders/OrderCreated/latest.avsc", v1())
    misplaced = write(tmp_path, "orders/OrderCreated.avsc", v1())
    problems = check_catalogue(tmp_path)
    assert {p.path for p in problems} == {str(bad_name), str(misplaced)}


def test_same_event_name_in_two_contexts_is_reported(tmp_path: Path) -> None:
    write(tmp_path, "orders/OrderCreated/v1.avsc", v1())
    write(tmp_path, "billing/OrderCreated/v1.avsc", {**v1(), "namespace": "choreo.billing"})
    assert messages(check_catalogue(tmp_path)) == [
        "event name OrderCreated is also used in context billing"
    ]


def test_version_identical_to_an_earlier_one_is_reported(catalogue: Path) -> None:
    # only a doc change: same parsing canonical form, so the same fingerprint on the wire
    write(catalogue, "orders/OrderCreated/v3.avsc", {**v2_good(), "doc": "same"})
    assert messages(check_catalogue(catalogue)) == [
        "same parsing canonical form (fingerprint) as orders/OrderCreated/v2; "
        "a new version must change what is written"
    ]


# ---------------------------------------------------------------------------- lock file


def canonical_fp(schema: Any) -> str:
    return fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO")


def test_write_lock_records_every_version_sorted(catalogue: Path) -> None:
    added = write_lock(catalogue)
    expected = [
        f"orders/OrderCreated/v1 {canonical_fp(v1())}",
        f"orders/OrderCreated/v2 {canonical_fp(v2_good())}",
    ]
    assert added == expected
    assert (catalogue / "fingerprints.lock").read_text() == "".join(f"{x}\n" for x in expected)
    assert all(len(x.split()[1]) == 16 for x in expected)
    assert check_catalogue(catalogue) == []


def test_write_lock_adds_only_new_versions(catalogue: Path) -> None:
    write_lock(catalogue)
    v3 = order_created(
        fld("note", ["null", "string"], default=None), fld("tag", "string", default="")
    )
    write(catalogue, "orders/OrderCreated/v3.avsc", v3)
    invoice = {**record("InvoiceIssued"), "namespace": "choreo.billing"}
    write(catalogue, "billing/InvoiceIssued/v1.avsc", invoice)
    added = write_lock(catalogue)
    assert [a.split()[0] for a in added] == ["billing/InvoiceIssued/v1", "orders/OrderCreated/v3"]
    lines = (catalogue / "fingerprints.lock").read_text().splitlines()
    assert [x.split()[0] for x in lines] == [
        "billing/InvoiceIssued/v1",
        "orders/OrderCreated/v1",
        "orders/OrderCreated/v2",
        "orders/OrderCreated/v3",
    ]
    assert write_lock(catalogue) == []


def test_lock_versions_sort_numerically(tmp_path: Path) -> None:
    for n in range(1, 12):
        write(
            tmp_path,
            f"orders/OrderCreated/v{n}.avsc",
            order_created(*(fld(f"f{i}", "int", default=0) for i in range(n - 1))),
        )
    write_lock(tmp_path)
    keys = [x.split()[0] for x in (tmp_path / "fingerprints.lock").read_text().splitlines()]
    assert keys == [f"orders/OrderCreated/v{n}" for n in range(1, 12)]


def test_unreleased_versions_are_fine(catalogue: Path) -> None:
    lock = catalogue / "fingerprints.lock"
    lock.write_text(f"orders/OrderCreated/v1 {canonical_fp(v1())}\n")
    assert check_catalogue(catalogue) == []


def test_edited_locked_version_is_reported(catalogue: Path) -> None:
    write_lock(catalogue)
    path = write(catalogue, "orders/OrderCreated/v1.avsc", order_created(fld("x", "int")))
    problems = check_catalogue(catalogue)
    assert [p.path for p in problems] == [str(path)]
    assert "released version orders/OrderCreated/v1 was edited" in problems[0].message


def test_cosmetic_edit_of_a_locked_version_is_allowed(catalogue: Path) -> None:
    write_lock(catalogue)
    write(catalogue, "orders/OrderCreated/v1.avsc", {**v1(), "doc": "clarified"})
    assert check_catalogue(catalogue) == []


def test_deleted_locked_version_is_reported(catalogue: Path) -> None:
    write_lock(catalogue)
    (catalogue / "orders/OrderCreated/v2.avsc").unlink()
    assert check_catalogue(catalogue) == [
        Problem(
            str(catalogue / "orders/OrderCreated/v2.avsc"),
            f"released version orders/OrderCreated/v2 was deleted "
            f"(see {catalogue / 'fingerprints.lock'})",
        )
    ]


def test_locked_version_that_no_longer_parses_is_reported(catalogue: Path) -> None:
    write_lock(catalogue)
    write(catalogue, "orders/OrderCreated/v1.avsc", "{")
    assert sorted(m.split(":")[0] for m in messages(check_catalogue(catalogue))) == [
        "not valid JSON",
        "released version orders/OrderCreated/v1 was edited (it no longer parses)",
    ]


def test_malformed_lock_line_is_reported(catalogue: Path) -> None:
    lock = catalogue / "fingerprints.lock"
    lock.write_text("orders/OrderCreated/v1 nothex\n")
    assert check_catalogue(catalogue) == [
        Problem(str(lock), "line 1: expected 'context/Event/vN <16 hex digits>'")
    ]


def test_explicit_lock_file_location(catalogue: Path, tmp_path: Path) -> None:
    lock = tmp_path / "elsewhere" / "schemas.lock"
    write_lock(catalogue, lock)
    assert lock.exists() and not (catalogue / "fingerprints.lock").exists()
    edited_v2 = order_created(fld("note", ["null", "long"], default=None))
    write(catalogue, "orders/OrderCreated/v2.avsc", edited_v2)
    assert check_catalogue(catalogue) == []  # default lock file is absent
    assert len(check_catalogue(catalogue, lock)) == 1


def test_write_lock_refuses_a_broken_catalogue(catalogue: Path) -> None:
    write(catalogue, "orders/OrderCreated/v2.avsc", v2_bad())
    with pytest.raises(CatalogueError) as info:
        write_lock(catalogue)
    assert len(info.value.problems) == 1
    assert not (catalogue / "fingerprints.lock").exists()


def test_write_lock_refuses_to_relock_an_edited_version(catalogue: Path) -> None:
    write_lock(catalogue)
    before = (catalogue / "fingerprints.lock").read_text()
    write(
        catalogue,
        "orders/OrderCreated/v2.avsc",
        order_created(fld("note", ["null", "string", "long"], default=None)),
    )
    with pytest.raises(CatalogueError, match="was edited"):
        write_lock(catalogue)
    assert (catalogue / "fingerprints.lock").read_text() == before


def test_lock_fingerprint_matches_the_wire_fingerprint(catalogue: Path) -> None:
    write_lock(catalogue)
    first = (catalogue / "fingerprints.lock").read_text().splitlines()[0]
    assert first.split()[1] == canonical_fp(
        json.loads((catalogue / "orders/OrderCreated/v1.avsc").read_text())
    )
