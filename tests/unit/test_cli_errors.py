"""The CLI's one-line errors: what they name and what they never print (secrets), and
``choreo --version``."""

from __future__ import annotations

from importlib.metadata import version

import pytest
from aiokafka.errors import KafkaConnectionError
from sqlalchemy.exc import OperationalError

from events.cli.errors import CliError, broker_unreachable, database_unreachable, masked
from events.cli.main import main
from events.kafka import KafkaConnection


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+asyncpg://choreo:s3cret@db.example:5432/orders",
            "postgresql+asyncpg://choreo:***@db.example:5432/orders",
        ),
        ("sqlite+aiosqlite:////var/choreo/orders.db", "sqlite+aiosqlite:////var/choreo/orders.db"),
        ("not a url://user:s3cret@host/x", "not a url://***@host/x"),
    ],
)
def test_a_database_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert masked(url) == shown


def test_a_password_given_in_the_query_string_is_masked_too() -> None:
    text = masked("postgresql+asyncpg://db.example/orders?user=choreo&password=s3cret")
    assert "s3cret" not in text and "db.example/orders" in text and "user=choreo" in text


def test_an_unreachable_database_is_one_line_naming_service_and_url_never_the_secret() -> None:
    url = "postgresql+asyncpg://choreo:s3cret@db.example:5432/orders"
    # A driver whose message repeats the password must not get it printed either.
    driver = ConnectionRefusedError(111, "refused for choreo:s3cret")
    error = database_unreachable("orders", url, OperationalError("SELECT 1", {}, driver))
    text = str(error)
    assert isinstance(error, CliError) and error.status == 1
    assert "\n" not in text and "s3cret" not in text
    assert "orders database postgresql+asyncpg://choreo:***@db.example:5432/orders" in text
    assert "refused for choreo:***" in text and "ORDERS_DATABASE_URL" in text
    assert "SELECT 1" not in text  # the driver's words, not SQLAlchemy's statement dump


def test_an_unreachable_broker_names_its_address_and_what_to_do() -> None:
    text = str(
        broker_unreachable(
            KafkaConnection("10.0.0.9:9092"), KafkaConnectionError("Unable to bootstrap")
        )
    )
    assert text.startswith("cannot reach Kafka at 10.0.0.9:9092: no broker answered")
    assert "choreo broker up" in text and "KAFKA_BOOTSTRAP_SERVERS" in text
    assert "\n" not in text


def test_version_prints_the_installed_package_version_and_exits_0(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"choreo {version('choreo')}\n"


def test_a_bad_command_line_is_one_line_and_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["topics", "apply", "--output", "yaml"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'yaml'" in err
