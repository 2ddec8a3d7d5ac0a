"""Dead letters: a message the consumer cannot apply goes to ``<topic>.dlq`` with the reason."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from events.catalogue import dead_letter_topic
from events.envelope import utcnow

DLQ_REASON = "dlq-reason"
DLQ_ERROR = "dlq-error-type"
DLQ_CONSUMER = "dlq-consumer"
DLQ_TOPIC = "dlq-original-topic"
DLQ_PARTITION = "dlq-original-partition"
DLQ_OFFSET = "dlq-original-offset"
DLQ_ATTEMPTS = "dlq-attempts"
DLQ_FAILED_AT = "dlq-failed-at"
DLQ_HEADERS = {
    DLQ_REASON,
    DLQ_ERROR,
    DLQ_CONSUMER,
    DLQ_TOPIC,
    DLQ_PARTITION,
    DLQ_OFFSET,
    DLQ_ATTEMPTS,
    DLQ_FAILED_AT,
}
_MAX_REASON = 2000


def dead_letter_headers(
    record: ConsumerRecord, *, consumer: str, error: BaseException, attempts: int
) -> list[tuple[str, bytes]]:
    original = [(k, v) for k, v in (record.headers or ()) if k not in DLQ_HEADERS]
    reason = str(error) or type(error).__name__
    return [
        *original,
        (DLQ_REASON, reason[:_MAX_REASON].encode()),
        (DLQ_ERROR, type(error).__name__.encode()),
        (DLQ_CONSUMER, consumer.encode()),
        (DLQ_TOPIC, record.topic.encode()),
        (DLQ_PARTITION, str(record.partition).encode()),
        (DLQ_OFFSET, str(record.offset).encode()),
        (DLQ_ATTEMPTS, str(attempts).encode()),
        (DLQ_FAILED_AT, utcnow().isoformat().encode()),
    ]


async def send_dead_letter(
    producer: AIOKafkaProducer,
    record: ConsumerRecord,
    *,
    consumer: str,
    error: BaseException,
    attempts: int,
) -> None:
    """Publish the original bytes to the dead-letter topic and wait for the broker's ack."""
    headers = dead_letter_headers(record, consumer=consumer, error=error, attempts=attempts)
    await producer.send_and_wait(
        dead_letter_topic(record.topic), record.value, key=record.key, headers=headers
    )
