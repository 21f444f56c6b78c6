"""Issue 10's example on a real local Ray and broker: a partition's LevelDB loses ``CURRENT``.

400 users on 4 partitions; stop; restart and count more for half of them (the other half's
values then live only in LevelDB's older table files); stop; delete ``CURRENT`` of one
partition's copy; start and click once more per user. Before: 45 users restarted from zero
and the loss went to the changelog. Now the copy is moved aside and rebuilt, and every
count is right, in the changelog and in every local copy.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import cloudpickle
import kafka_helpers
from kafka_helpers import latest_values, produce, read_topic, table_contents, wait_until

from goka_ray import codecs
from goka_ray.core.storage import node_storage_dir, partition_dir
from goka_ray.examples import click_counter
from goka_ray.kafka.local_copy import DAMAGED_SUFFIX
from goka_ray.kafka.topics import TopicManager
from goka_ray.ray.processor import Processor

cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(kafka_helpers)

NAMESPACE = "goka-ray-tests"
PARTITIONS = 4
USERS = [f"user-{u}" for u in range(400)]
INT = codecs.Int()


def run_once(brokers, graph, topic, config, ends):  # type: ignore[no-untyped-def]
    """Start the group, wait until it consumed ``ends``, stop it; returns its last status."""
    processor = Processor(brokers, graph, config)
    processor.start()
    try:
        processor.wait_ready(120)

        def consumed() -> bool:
            parts = processor.status().partitions
            return all(p.offsets.get(topic, 0) >= ends.get(p.partition, 0) for p in parts)

        wait_until(consumed, 120, f"{topic} consumed to {ends}")
        return processor.status()
    finally:
        processor.stop()


def test_a_lost_current_file_is_rebuilt_and_no_count_restarts_from_zero(
    kafka, unique, tmp_path, ray_local
):
    brokers = kafka.bootstrap_servers
    topic = f"{unique}-clicks"
    graph = click_counter(f"{unique}-counter", topic)
    with TopicManager(brokers) as topics:
        topics.ensure_stream(topic, PARTITIONS)
    config = {
        "storage_dir": str(tmp_path),
        "namespace": NAMESPACE,
        "groups": {graph.group: {"num_cpus": 0.1, "actors": 2}},
    }
    truth: Counter[str] = Counter()
    ends: dict[int, int] = {}

    def click(users: list[str], times: int) -> None:
        ends.update(produce(brokers, topic, [(u, b"click") for u in users] * times))
        truth.update({u: times for u in users})

    click(USERS, 20)
    first = run_once(brokers, graph, topic, config, ends)
    click(USERS[:200], 4)
    second = run_once(brokers, graph, topic, config, ends)

    damaged = second.partitions[1]
    assert damaged.node_id
    copy = partition_dir(
        node_storage_dir(tmp_path, damaged.node_id), graph.group, graph.table_topic, 1
    )
    (copy / "CURRENT").unlink()

    click(USERS, 1)
    third = run_once(brokers, graph, topic, config, ends)

    changelog = {
        k.decode(): INT.decode(v)
        for k, v in latest_values(read_topic(brokers, graph.table_topic, PARTITIONS)).items()
    }
    assert changelog == truth  # every user's count, none restarted from zero
    node_dir = node_storage_dir(tmp_path, damaged.node_id)
    assert table_contents(node_dir, graph.group, graph.table_topic, PARTITIONS) == truth
    assert Path(f"{copy}{DAMAGED_SUFFIX}").is_dir()
    # the damaged partition read its whole changelog again; the others only their tail
    by_partition = {p.partition: p for p in third.partitions}
    assert by_partition[1].recovered >= by_partition[1].keys > 0
    for p in (0, 2, 3):
        assert by_partition[p].recovered == 0, (p, by_partition[p].recovered)
    assert all(p.restarts == 0 for p in third.partitions)
    assert first.partitions and all(p.keys for p in first.partitions)
