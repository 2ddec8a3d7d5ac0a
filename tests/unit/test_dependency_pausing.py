"""What the consumer does with a dependency's outage, without I/O: the partitions held
back (from which offset, until when), and the retry loop handing the outage to the
consumer instead of counting a retry or dead-lettering the event."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from events.consumed import ConsumerStats, ParkedFailure, with_retries
from events.dependency import DependencyUnavailable as FromTheClient
from events.pausing import DependencyUnavailable, PausedPartitions, Unavailable, unavailable_in
from events.routing import RetryPolicy


def outage(retry_after_s: float = 0.01) -> DependencyUnavailable:
    return DependencyUnavailable("provider", retry_after_s, "breaker open")


def test_the_client_raises_the_error_the_consumer_catches():
    assert FromTheClient is DependencyUnavailable


def test_a_partition_is_held_from_its_lowest_offset_until_its_latest_time():
    paused: PausedPartitions[str] = PausedPartitions()
    assert paused.hold("t-0", offset=7, until=10.0) == 7
    assert paused.hold("t-0", offset=9, until=5.0) == 7  # a later record: the same hold
    assert paused.hold("t-0", offset=4, until=12.0) == 4  # an earlier one: fetched again too
    assert not paused.holds("t-0", 3)
    assert paused.holds("t-0", 4) and paused.holds("t-0", 100)
    assert not paused.holds("t-1", 100)
    assert paused.offset("t-0") == 4 and paused.offset("t-1") is None
    assert paused.next_due() == 12.0


def test_partitions_come_due_in_their_time_and_are_then_free():
    paused: PausedPartitions[str] = PausedPartitions()
    paused.hold("a", 1, until=1.0)
    paused.hold("b", 1, until=2.0)
    assert paused.due(0.5) == []
    assert paused.due(1.0) == ["a"]
    assert "a" not in paused and "b" in paused and len(paused) == 1
    assert not paused.holds("a", 5)
    paused.clear()  # a rebalance
    assert len(paused) == 0 and paused.due(99.0) == []


def test_the_outage_is_found_wrapped_or_not():
    error = outage()
    assert unavailable_in(error) is error
    assert unavailable_in(Unavailable(object(), error)) is error
    assert unavailable_in(ParkedFailure(0, object(), error)) is error  # type: ignore[arg-type]
    assert unavailable_in(ValueError("bad event")) is None
    assert unavailable_in(ParkedFailure(0, object(), ValueError("x"))) is None  # type: ignore[arg-type]


@dataclass
class FakeConsumer:
    name: str = "unit-consumer"
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(attempts=3))
    stats: ConsumerStats = field(default_factory=ConsumerStats)


async def test_an_outage_goes_to_the_consumer_not_to_the_dead_letters():
    consumer = FakeConsumer()
    given_up: list[Exception] = []
    paused: list[DependencyUnavailable] = []
    error = outage()

    async def attempt() -> None:
        raise Unavailable("record", error)

    async def give_up(exc: Exception, attempts: int) -> None:
        given_up.append(exc)

    async def pause(e: DependencyUnavailable) -> None:
        paused.append(e)

    await with_retries(consumer, attempt, give_up, "event", asyncio.Event(), pause)
    assert paused == [error]
    assert given_up == [] and consumer.stats.retries == 0


async def test_without_a_partition_to_pause_the_attempt_waits_uncounted():
    consumer = FakeConsumer()
    tries = 0

    async def attempt() -> None:
        nonlocal tries
        tries += 1
        if tries <= 5:  # more outages than retry.attempts: none of them counts
            raise ParkedFailure(0, "record", outage(0.001))  # type: ignore[arg-type]

    async def give_up(exc: Exception, attempts: int) -> None:
        raise AssertionError(f"gave up on an outage: {exc!r}")

    await with_retries(consumer, attempt, give_up, "key k", asyncio.Event())
    assert tries == 6 and consumer.stats.retries == 0


async def test_waiting_for_a_dependency_ends_when_the_consumer_stops():
    stop = asyncio.Event()

    async def attempt() -> None:
        stop.set()
        raise outage(60.0)

    async def give_up(exc: Exception, attempts: int) -> None:
        raise AssertionError("gave up")

    with pytest.raises(DependencyUnavailable):
        async with asyncio.timeout(5):
            await with_retries(FakeConsumer(), attempt, give_up, "key k", stop)


async def test_an_error_of_the_event_still_gives_up_after_the_attempts():
    consumer = FakeConsumer(retry=RetryPolicy(attempts=2, initial_s=0.001))
    given_up: list[int] = []

    async def attempt() -> None:
        raise ValueError("bad event")

    async def give_up(exc: Exception, attempts: int) -> None:
        given_up.append(attempts)

    async def pause(e: DependencyUnavailable) -> None:
        raise AssertionError("paused for an error of the event")

    await with_retries(consumer, attempt, give_up, "event", asyncio.Event(), pause)
    assert given_up == [2]
