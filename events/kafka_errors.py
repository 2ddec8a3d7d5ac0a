"""Which failures to publish an outbox row no retry can fix (the row is quarantined), and
which are the broker's or the network's (the relay backs off and retries).

Permanent, per record (aiokafka 0.14's classes):

- ``MessageSizeTooLargeError`` (broker error 10, or aiokafka's own check against
  ``max_request_size`` before sending): the record, or the batch it travelled in, is larger
  than the topic's ``max.message.bytes``; the same bytes are refused every time.
- ``RecordTooLargeError``: aiokafka's client-side refusal of a record too large to batch.
- ``RecordListTooLargeError`` (18): a batch larger than the log segment; the relay learns
  by sending the row alone whether the row or its batchmates were at fault.
- ``CorruptRecordException`` (2, alias ``InvalidMessageError``): the broker rejects the
  record's bytes (CRC, size or format).
- ``InvalidTopicError`` (17): the topic name is illegal or internal; renaming needs a code
  change.
- ``TopicAuthorizationFailedError`` (29) and ``ClusterAuthorizationFailedError`` (31): the
  service's principal may not write there; the ACL must change, and after it does the
  operator re-queues the rows (``choreo outbox retry --all``). A producer that cannot start
  for this reason is not a row's fault: only failures of a record's send are classified.
- ``InvalidRequiredAcksError`` is a configuration bug, not a row's; it is left transient so
  the relay keeps the rows and says why in its log.
- :class:`TopicNotInCatalogue`: the row names a topic the service's catalogue no longer
  routes to (it was written before a deployment renamed or removed it).

Everything else (timeouts, connection loss, leader changes, out-of-order sequence numbers
after a failed batch) is transient: the relay starts a fresh producer and retries. The
broker's INVALID_RECORD (87) reaches aiokafka 0.14 as ``UnknownError``, which cannot be
told from other unknown failures: it is retried, and the relay's log and ``/ready`` say so.
"""

from __future__ import annotations

from aiokafka.errors import (
    BrokerResponseError,
    ClusterAuthorizationFailedError,
    CorruptRecordException,
    InvalidTopicError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
)


class TopicNotInCatalogue(Exception):
    """An outbox row bound for a topic the catalogue does not know."""


PERMANENT: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    CorruptRecordException,
    InvalidTopicError,
    TopicAuthorizationFailedError,
    ClusterAuthorizationFailedError,
    TopicNotInCatalogue,
)


def is_permanent(exc: BaseException) -> bool:
    """True when sending the same record again cannot succeed."""
    return isinstance(exc, PERMANENT)


def describe(exc: BaseException) -> str:
    """One line for logs and the quarantine table: the class and what it says (a broker's
    error says only its code and name: its documented meaning is added)."""
    text = " ".join(str(exc).split())
    if isinstance(exc, BrokerResponseError) and exc.description:
        text = f"{text}: {exc.description}"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
