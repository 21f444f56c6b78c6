"""Local copies belong to a Ray node (issue 15, item 1), on Ray's multi-node test cluster.

Two nodes on one machine share one disk, as nodes sharing a mounted home directory do: each
partition's copy lies under its own node's directory, so two nodes never open the same
LevelDB directory. After a restart, a partition back on its node reads only the changelog's
tail; one placed on the other node recovers from the changelog.
"""

from __future__ import annotations

import sys
from collections import Counter

import cloudpickle
import kafka_helpers
import pytest
import ray
from kafka_helpers import produce, wait_until
from ray.cluster_utils import Cluster

from goka_ray import LevelDBStorage, codecs
from goka_ray.core.storage import node_storage_dir, partition_dir
from goka_ray.examples import click_counter
from goka_ray.kafka.topics import TopicManager
from goka_ray.ray.processor import Processor

cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(kafka_helpers)

NAMESPACE = "goka-ray-tests"
PARTITIONS = 2
USERS = [f"user-{u}" for u in range(300)]
INT = codecs.Int()


@pytest.fixture(scope="module")
def two_nodes():  # type: ignore[no-untyped-def]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


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


def test_each_node_keeps_its_own_copies_and_a_returning_partition_reads_only_the_tail(
    kafka, unique, tmp_path, two_nodes
):
    brokers = kafka.bootstrap_servers
    topic = f"{unique}-clicks"
    graph = click_counter(f"{unique}-counter", topic)
    with TopicManager(brokers) as topics:
        topics.ensure_stream(topic, PARTITIONS)
    # one CPU per actor and per node: the two partition actors run on different nodes
    config = {
        "storage_dir": str(tmp_path),
        "namespace": NAMESPACE,
        "groups": {graph.group: {"num_cpus": 1, "actors": 2, "placement": "spread"}},
    }
    truth: Counter[str] = Counter()
    ends = produce(brokers, topic, [(u, b"click") for u in USERS] * 3)
    truth.update({u: 3 for u in USERS})

    first = run_once(brokers, graph, topic, config, ends)
    nodes = {p.partition: p.node_id for p in first.partitions}
    assert all(nodes.values()) and len(set(nodes.values())) == PARTITIONS, nodes
    for p, node in nodes.items():
        assert node is not None
        copy = partition_dir(node_storage_dir(tmp_path, node), graph.group, graph.table_topic, p)
        assert copy.is_dir(), copy
        other = next(n for n in nodes.values() if n != node)
        assert other is not None
        elsewhere = node_storage_dir(tmp_path, other)
        assert not partition_dir(elsewhere, graph.group, graph.table_topic, p).exists()
    assert not (tmp_path / graph.group).exists()  # nothing outside a node's directory

    ends.update(produce(brokers, topic, [(u, b"click") for u in USERS]))
    truth.update(USERS)
    second = run_once(brokers, graph, topic, config, ends)
    for p in second.partitions:
        assert p.node_id is not None
        if p.node_id == nodes[p.partition]:
            assert p.recovered == 0, p  # its copy was current: nothing to read again
        else:
            assert p.recovered >= first.partitions[p.partition].keys, p  # the whole changelog
    counts: dict[str, int] = {}
    for p in second.partitions:
        assert p.node_id is not None
        copy = partition_dir(
            node_storage_dir(tmp_path, p.node_id), graph.group, graph.table_topic, p.partition
        )
        storage = LevelDBStorage(copy)
        counts.update({k.decode(): INT.decode(v) for k, v in storage.iterate()})
        storage.close()
    assert counts == truth
