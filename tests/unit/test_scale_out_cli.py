"""The scale-out commands' wording, without a broker: ``choreo status``'s table has a row
per instance with the service's dead letters once, ``topics apply --raise-partitions``'s
note says what it does to key ordering, and the refusals are one line with status 2."""

from __future__ import annotations

import pytest

from events.cli.main import main
from events.cli.status import _table
from events.cli.topics import ORDERING_NOTE, _report_lines


def _row(service: str, instance: str, port: int, up: bool, dlq: int) -> dict[str, object]:
    return {
        "service": service,
        "instance": instance,
        "port": port,
        "up": up,
        "ready": up,
        "lag": 0.0 if up else None,
        "dead_letters": dlq,
    }


def test_status_table_has_a_row_per_instance_and_the_services_dead_letters_once() -> None:
    doc = {
        "kafka": "reachable",
        "bootstrap": "127.0.0.1:9192",
        "services": [
            _row("orders", "orders", 8101, True, 4),
            _row("orders", "orders-2", 8201, False, 4),
            _row("notifications", "notifications-2", 8205, True, 0),
        ],
    }
    _, header, first, second, third = list(_table(doc))
    assert header.split()[:3] == ["service", "port", "state"]
    assert first.split()[:3] == ["orders", "8101", "ready"] and first.split()[-1] == "4"
    assert second.split()[:3] == ["orders-2", "8201", "down"]
    assert not second.rstrip().endswith("4")  # the service's letters, not a sum to make
    assert third.split()[:3] == ["notifications-2", "8205", "ready"]


def test_raised_partitions_are_listed_and_the_note_comes_once() -> None:
    doc = {
        "created": [],
        "unchanged": ["a"],
        "raised": ["b: 1 -> 3 partitions", "b.dlq: 1 -> 3 partitions"],
        "differences": [],
        "note": ORDERING_NOTE,
        "acls": {"authorizer": False, "created": [], "unchanged": [], "extra": []},
    }
    lines = list(_report_lines(doc))
    assert "raised    b: 1 -> 3 partitions" in lines
    assert [line for line in lines if line.startswith("note:")] == [f"note: {ORDERING_NOTE}"]
    assert "Kafka cannot lower a topic's partitions" in ORDERING_NOTE
    assert "out of order" in ORDERING_NOTE and "drained" in ORDERING_NOTE


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["broker", "up", "--nodes", "3", "--secure"],
            "--secure runs one node; the cluster (--nodes) is plaintext",
        ),
        (["topics", "list", "--raise-partitions"], "--raise-partitions goes with `topics apply`"),
    ],
)
def test_refusals_are_one_line_with_status_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"choreo: error: {message}\n"
