"""What the platform could not reach, in one line: the broker's address or a database URL
with its password masked (a secret is never printed), the reason, and what to do about it.
The command line wraps these in its error type; the admin functions report them as text."""

from __future__ import annotations

import re

from aiokafka.errors import KafkaConnectionError, KafkaError
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from events.kafka import KafkaConnection
from events.kafka_auth import explain

# What talking to the broker raises when it is not there: aiokafka's errors, a socket's
# OSError, and asyncio's TimeoutError from a bounded wait on bootstrap.
BROKER_ERRORS: tuple[type[BaseException], ...] = (KafkaError, OSError, TimeoutError)
# asyncpg raises OSError (connection refused, unknown host) without SQLAlchemy's wrapper.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (SQLAlchemyError, OSError, TimeoutError)

_SECRET_KEYS = re.compile(r"pass|secret|token|key", re.IGNORECASE)


def masked(url: str) -> str:
    """The database URL with its password (and any password-like query value) as ***."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except ArgumentError:  # not a URL SQLAlchemy reads: drop whatever precedes an @
        return re.sub(r"//[^/@]*@", "//***@", url)
    query = {k: ("***" if _SECRET_KEYS.search(k) else v) for k, v in parsed.query.items()}
    return parsed.set(query=query).render_as_string(hide_password=True)


def _reason(exc: BaseException, secret: str | None = None) -> str:
    if isinstance(exc, KafkaConnectionError):
        text = "no broker answered"
    elif isinstance(exc, TimeoutError):
        text = "timed out"
    elif isinstance(exc, DBAPIError) and exc.orig is not None:
        text = str(exc.orig)  # the driver's words, without SQLAlchemy's SQL and link
    else:
        text = str(exc)
    text = " ".join(text.split()) or type(exc).__name__
    if secret:
        text = text.replace(secret, "***")
    return text


def broker_unreachable(kafka: KafkaConnection, exc: BaseException) -> str:
    """One line: Kafka's refusal of the principal (wrong password, untrusted certificate,
    missing ACL: ``events.kafka_auth``), else the broker that did not answer."""
    refused = explain(kafka, exc)
    if refused is not None:
        return refused
    return (
        f"cannot reach Kafka at {kafka}: {_reason(exc)} (is the broker running? "
        "`choreo broker up` starts the local one; KAFKA_BOOTSTRAP_SERVERS says where it is)"
    )


def database_unreachable(service: str, url: str, exc: BaseException) -> str:
    secret = _password(url)
    return (
        f"cannot use the {service} database {masked(url)}: {_reason(exc, secret)} "
        f"(is it up, and is {service.upper()}_DATABASE_URL right?)"
    )


def _password(url: str) -> str | None:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).password or None
    except ArgumentError:
        return None
