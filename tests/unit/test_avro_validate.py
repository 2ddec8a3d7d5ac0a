"""The one payload validator (``events.avro.validate``): every fault named by its path."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from events.avro.bounds import INT_MAX, LONG_MIN
from events.avro.validate import Validator, first_error, is_uuid

ID = "7c9e6679-7425-40de-944b-e07fc1f99a7b"

LINE = {
    "type": "record",
    "name": "Line",
    "fields": [{"name": "sku", "type": "string"}, {"name": "qty", "type": "int"}],
}
SCHEMA = {
    "type": "record",
    "name": "Thing",
    "namespace": "choreo.test",
    "fields": [
        {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "lines", "type": {"type": "array", "items": LINE}},
        {"name": "spare", "type": ["null", "Line"], "default": None},
        {"name": "tags", "type": {"type": "map", "values": "long"}},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "next", "type": ["null", "choreo.test.Thing"], "default": None},
    ],
}


def valid(**changes: Any) -> dict[str, Any]:
    return {"id": ID, "lines": [{"sku": "a", "qty": 1}], "tags": {}, "at": 0, **changes}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (valid(zz=1), "zz: unknown field (not in the contract)"),
        ({k: v for k, v in valid().items() if k != "at"}, "at: required field is missing"),
        (valid(id="nope"), "id: 'nope' is not a UUID"),
        (valid(id=5), "id: expected uuid, got int 5"),
        (valid(lines=[{"sku": "a", "qty": "2"}]), "lines[0].qty: expected int, got str '2'"),
        (
            valid(lines=[{"sku": "a", "qty": INT_MAX + 1}]),
            f"lines[0].qty: {INT_MAX + 1} is out of range for int",
        ),
        (valid(lines="x"), "lines: expected a list, got str"),
        (valid(spare={"sku": "a"}), "spare.qty: required field is missing"),
        (valid(tags={"k": "v"}), "tags.k: expected long, got str 'v'"),
        (valid(at=LONG_MIN - 1), f"at: {LONG_MIN - 1} is out of range for long"),
        (
            valid(at=datetime(2026, 1, 1)),
            "at: timestamp needs a timezone (e.g. 2026-01-01T00:00:00Z)",
        ),
        (valid(next=valid(next=valid(tags=[]))), "next.next.tags: expected an object, got list"),
        ([], "payload: expected an object, got list"),
    ],
)
def test_the_fault_is_named_by_its_path(payload: Any, message: str) -> None:
    validator = Validator(SCHEMA)
    assert not validator.ok(payload)
    assert validator(payload) == message
    assert first_error(SCHEMA, payload) == message


def test_valid_payloads_pass_both_paths() -> None:
    validator = Validator(SCHEMA)
    for payload in [valid(), valid(spare=None, next=valid(), at=datetime(2026, 1, 1, tzinfo=UTC))]:
        assert validator.ok(payload)
        assert validator(payload) is None
        assert validator.explain(payload) is None


def test_a_union_without_null_says_which_branch_last_failed() -> None:
    schema = {"type": "record", "name": "R", "fields": [{"name": "x", "type": ["int", "string"]}]}
    assert first_error(schema, {"x": None}) == "x: required, got null"
    assert first_error(schema, {"x": 1.5}) == "x: expected string, got float 1.5"


def test_uuids_in_any_form_uuid_accepts() -> None:
    assert is_uuid(ID) and is_uuid(ID.upper()) and is_uuid("urn:uuid:" + ID)
    assert not is_uuid(ID[:-1]) and not is_uuid(5)
