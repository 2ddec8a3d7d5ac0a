"""The listings' two forms (``--output text|json``), the topic listing in both, and how
``choreo status`` reads a service's /metrics (prometheus_client's parser, summed per metric)."""

from __future__ import annotations

import json

import pytest

from events.catalogue import Catalogue
from events.cli.main import main
from events.cli.output import print_document, print_rows
from events.cli.status import metric_sums

ROWS = [{"name": "a", "n": 1}, {"name": "b", "n": 2}]


def test_json_rows_are_one_object_per_line_and_text_rows_use_the_line_function(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert print_rows("json", ROWS, lambda r: "unused") == 2
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == ROWS
    print_rows("text", ROWS, lambda r: f"{r['name']}={r['n']}")
    assert capsys.readouterr().out == "a=1\nb=2\n"


def test_a_document_is_one_json_line_or_its_text_lines(capsys: pytest.CaptureFixture[str]) -> None:
    doc = {"kafka": "reachable", "services": ROWS}
    print_document("json", doc, lambda d: ["unused"])
    assert json.loads(capsys.readouterr().out) == doc
    print_document("text", doc, lambda d: [d["kafka"], str(len(d["services"]))])
    assert capsys.readouterr().out == "reachable\n2\n"


def test_topics_list_prints_every_catalogue_topic_in_either_form(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOPIC_PREFIX", "t1.")
    assert main(["topics", "list", "--output", "json"]) == 0
    listed = {d["topic"]: d for d in map(json.loads, capsys.readouterr().out.splitlines())}
    assert set(listed) == {f"t1.{name}" for name in Catalogue.load().topics}
    assert "OrderPlaced" in listed["t1.orders.requests"]["event_types"]
    assert main(["topics", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(listed) and lines[0].split("\t")[0] in listed


METRICS = """\
# HELP choreo_consumer_lag Events behind the log end
# TYPE choreo_consumer_lag gauge
choreo_consumer_lag{topic="a",partition="0"} 3.0
choreo_consumer_lag{topic="a",partition="1"} 4.0
# HELP choreo_outbox_backlog Unsent rows
# TYPE choreo_outbox_backlog gauge
choreo_outbox_backlog 0.0
# HELP choreo_events_total Events handled
# TYPE choreo_events_total counter
choreo_events_total{outcome="ok"} 10.0
choreo_events_created{outcome="ok"} 1.7e9
"""


def test_metrics_are_summed_over_their_labels() -> None:
    sums = metric_sums(METRICS)
    assert sums["choreo_consumer_lag"] == 7.0 and sums["choreo_outbox_backlog"] == 0.0
    assert sums["choreo_events_total"] == 10.0
    assert "choreo_parked_events" not in sums  # absent: shown as "-", not 0


def test_a_metrics_body_that_is_not_the_exposition_format_gives_no_figures() -> None:
    assert metric_sums('{"detail": "Not Found"}') == {}
