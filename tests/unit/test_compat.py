"""The catalogue gate (``choreo schemas check``): layout, naming, versions read the data of
earlier ones, and the fingerprint lock of released versions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastavro.schema import fingerprint, to_parsing_canonical_form

from events.compat import (
    CatalogueError,
    Problem,
    check_catalogue,
    write_lock,
)
from tests.unit.test_avro_compatibility import NS, fld, order_created, record

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
