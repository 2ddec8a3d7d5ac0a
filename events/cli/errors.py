"""The ``choreo`` commands' one error type.

A command raises :class:`CliError` for any failure the user can act on; ``events.cli.main.main``
alone prints it, as one line on stderr, and exits with its status. It lives in a module of
its own so that every command module imports the same class (``events.cli.main`` imports the
command modules, so they cannot import it back from there).
"""

from __future__ import annotations

from events import unreachable
from events.kafka import KafkaConnection
from events.unreachable import BROKER_ERRORS, DATABASE_ERRORS, masked

__all__ = [
    "BROKER_ERRORS",
    "DATABASE_ERRORS",
    "USAGE",
    "CliError",
    "broker_unreachable",
    "database_unreachable",
    "masked",
]

USAGE = 2  # argparse's status for a bad command line; a bad setting is one too


class CliError(Exception):
    """A user-facing failure of a command: printed as one line, exit ``status``."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def broker_unreachable(kafka: KafkaConnection, exc: BaseException) -> CliError:
    return CliError(unreachable.broker_unreachable(kafka, exc))


def database_unreachable(service: str, url: str, exc: BaseException) -> CliError:
    return CliError(unreachable.database_unreachable(service, url, exc))
