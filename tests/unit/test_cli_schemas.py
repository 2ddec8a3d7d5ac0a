"""``choreo schemas check`` is the CI gate for contract evolution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from events.cli.main import main

V1 = {
    "type": "record",
    "name": "ThingHappened",
    "namespace": "choreo.things",
    "fields": [{"name": "thing_id", "type": "string"}],
}


def catalogue_with(tmp_path: Path, v2_fields: list[dict[str, object]]) -> Path:
    folder = tmp_path / "things" / "ThingHappened"
    folder.mkdir(parents=True)
    (folder / "v1.avsc").write_text(json.dumps(V1))
    (folder / "v2.avsc").write_text(json.dumps({**V1, "fields": V1["fields"] + v2_fields}))
    return tmp_path


def test_rejects_a_required_field_without_default(tmp_path, capsys):
    root = catalogue_with(tmp_path, [{"name": "colour", "type": "string"}])
    assert main(["schemas", "check", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "v2.avsc" in out and "colour" in out and "no default" in out


def test_accepts_an_optional_field(tmp_path, capsys):
    root = catalogue_with(
        tmp_path, [{"name": "colour", "type": ["null", "string"], "default": None}]
    )
    assert main(["schemas", "check", "--root", str(root)]) == 0
    assert "schemas ok" in capsys.readouterr().out


def test_rejects_an_edited_released_version(tmp_path, capsys):
    root = catalogue_with(
        tmp_path, [{"name": "colour", "type": ["null", "string"], "default": None}]
    )
    assert main(["schemas", "release", "--root", str(root)]) == 0
    v1 = root / "things" / "ThingHappened" / "v1.avsc"
    v1.write_text(json.dumps({**V1, "fields": [{"name": "thing_id", "type": "long"}]}))
    assert main(["schemas", "check", "--root", str(root)]) == 1
    assert "v1" in capsys.readouterr().out


def test_the_project_catalogue_passes(capsys):
    assert main(["schemas", "check"]) == 0


def test_bad_arguments_exit_non_zero_with_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["schemas", "frobnicate"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "frobnicate" in err


def test_check_lists_its_problems_as_json_lines(tmp_path, capsys):
    root = catalogue_with(tmp_path, [{"name": "colour", "type": "string"}])
    assert main(["schemas", "check", "--root", str(root), "--output", "json"]) == 1
    problems = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert problems and all(set(p) == {"path", "message"} for p in problems)
    assert any(p["path"].endswith("v2.avsc") and "colour" in p["message"] for p in problems)


def test_a_clean_check_is_an_empty_json_listing(tmp_path, capsys):
    root = catalogue_with(
        tmp_path, [{"name": "colour", "type": ["null", "string"], "default": None}]
    )
    assert main(["schemas", "check", "--root", str(root), "--output", "json"]) == 0
    assert capsys.readouterr().out == ""
