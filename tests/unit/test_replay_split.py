"""How a replay deals partitions to its reader processes (pure)."""

from __future__ import annotations

from aiokafka import TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from events.replay_readers import readers_by_number, split, split_by_number


def test_a_big_topic_is_not_dealt_to_one_reader_with_its_neighbours():
    # Round-robin over (topic, partition) would give reader 0 both 900s.
    tps = [TopicPartition("orders", p) for p in range(2)] + [
        TopicPartition("notes", p) for p in range(2)
    ]
    sizes = {tps[0]: 900, tps[1]: 100, tps[2]: 900, tps[3]: 100}
    groups = split(tps, 2, sizes)
    assert sorted(sum(sizes[tp] for tp in g) for g in groups) == [1000, 1000]


@given(
    st.lists(st.integers(0, 10_000), min_size=1, max_size=40),
    st.integers(1, 6),
)
def test_every_partition_goes_to_one_reader_and_loads_stay_close(sizes_list, readers):
    tps = [TopicPartition(f"t{i % 5}", i) for i in range(len(sizes_list))]
    sizes = dict(zip(tps, sizes_list, strict=True))
    groups = split(tps, readers, sizes)
    dealt = [tp for g in groups for tp in g]
    assert sorted(dealt, key=lambda tp: tp.partition) == tps
    assert len(groups) <= readers and all(groups)
    loads = [sum(sizes[tp] for tp in g) for g in groups]
    if len(groups) == readers:  # greedy: no reader exceeds another by more than one partition
        assert max(loads) - min(loads) <= max(sizes_list)


@given(st.integers(1, 12), st.integers(1, 4), st.integers(1, 5))
def test_shares_by_number_hold_every_partition_number_whole_or_share_it_by_key(
    numbers, readers, topics
):
    tps = [TopicPartition(f"t{t}", p) for t in range(topics) for p in range(numbers)]
    shares = split_by_number(tps, readers)
    for p in range(numbers):
        holders = [(mine, shared) for mine, shared in shares if TopicPartition("t0", p) in mine]
        # Every topic's partition p goes where t0's does: a key's events stay together.
        for t in range(topics):
            assert all(TopicPartition(f"t{t}", p) in mine for mine, _ in holders)
        if len(holders) > 1:  # read by several: each takes the keys that hash to it
            assert len(holders) == readers and all(TopicPartition("t0", p) in s for _, s in holders)
        else:
            assert len(holders) == 1 and TopicPartition("t0", p) not in holders[0][1]


def test_three_partitions_on_two_cores_take_three_readers_not_a_shared_partition():
    assert readers_by_number(3, 2) == 3
    assert readers_by_number(6, 2) == 2
    assert readers_by_number(1, 2) == 2  # nothing divides: two readers share it by key
    assert readers_by_number(5, 4) == 5
