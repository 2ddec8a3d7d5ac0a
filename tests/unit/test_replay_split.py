"""How a replay deals partitions to its reader processes (pure)."""

from __future__ import annotations

from aiokafka import TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from events.replay_readers import split


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
