"""The ``choreo`` command line: the parser, assembled from the command modules (each adds its
commands by ``register(sub)``), and the one place errors are printed. Every failure is one
line on stderr and a non-zero exit: commands raise :class:`events.cli.errors.CliError`, and
:func:`main` alone prints it.

Exit statuses: 0 done; 1 a failure (a bad argument value, an unreachable broker or
database, a missing topic...); 2 a bad command line or setting; 3 a status command that
found something down or not done; 130 interrupted."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

from aiokafka.errors import KafkaError
from sqlalchemy.exc import SQLAlchemyError

from events.cli import (
    broker,
    catalogue_view,
    dlq,
    outbox,
    publish,
    registry,
    schemas,
    status,
    tail,
    token,
    topics,
)
from events.cli.errors import USAGE, CliError, broker_unreachable
from events.schema_registry import RegistryError, RegistryUnavailable
from events.settings import PlatformSettings, settings_error


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line naming what is wrong, instead of argparse's usage dump.
        self.exit(USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class _Version(argparse.Action):
    """``--version``: the installed package's version, looked up only when asked for (the
    lookup reads the installed distributions, which every other command can skip)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("choreo")
        except PackageNotFoundError:  # run from a source tree that was never installed
            number = "unknown (not installed)"
        print(f"{parser.prog} {number}")  # on stdout, as argparse's own version action does
        parser.exit()


Command = Callable[[argparse.Namespace, PlatformSettings], int]

# Adds commands to the subparsers (argparse has no public name for their type).
Register = Callable[[Any], None]


def build_parser(extra: Sequence[Register] = ()) -> argparse.ArgumentParser:
    """The parser of the platform's commands, plus ``extra`` ones (the reference system
    adds the commands that start its services: ``services.tools.stack``)."""
    parser = _Parser(prog="choreo", description="Event-driven choreography on Kafka.")
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in (
        broker,
        registry,
        topics,
        schemas,
        status,
        dlq,
        outbox,
        publish,
        catalogue_view,
        tail,
        token,
    ):
        module.register(sub)
    for register in extra:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None, extra: Sequence[Register] = ()) -> int:
    args = build_parser(extra).parse_args(argv)
    try:
        settings = PlatformSettings()
    except Exception as exc:  # pydantic's ValidationError: name the setting, one line
        return _fail(CliError(f"bad setting {settings_error(exc)}", USAGE))
    command: Command = args.run
    try:
        with _kafka_logs_quiet():
            return command(args, settings)
    except CliError as exc:
        return _fail(exc)
    # A command that let the broker's or a database's failure through still fails in one
    # line (the commands name the address or service; here only the broker's is known).
    except KafkaError as exc:
        return _fail(broker_unreachable(settings.kafka_connection(), exc))
    except SQLAlchemyError as exc:
        return _fail(CliError(f"database: {type(exc).__name__}: {getattr(exc, 'orig', exc)}"))
    except (RegistryError, RegistryUnavailable) as exc:  # a registry-format codec at start
        return _fail(CliError(str(exc)))
    except BrokenPipeError:
        # The reader went away (`choreo events | head`): nothing is wrong, nothing to say.
        # Python's recipe: point stdout at /dev/null so the flush at exit cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("choreo: interrupted", file=sys.stderr)
        return 130


def _fail(exc: CliError) -> int:
    print(f"choreo: error: {' '.join(str(exc).split())}", file=sys.stderr)
    return exc.status


@contextlib.contextmanager
def _kafka_logs_quiet() -> Iterator[None]:
    # aiokafka logs its own warnings (a refused connection, a retried request) to stderr;
    # the command reports what went wrong in its one line instead.
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
