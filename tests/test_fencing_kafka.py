"""Fencing against the local broker: a stale runner's last commit, and the epoch floor a
changelog gives a coordinator that lost its own record of epochs."""

from __future__ import annotations

import time

from confluent_kafka import Producer, TopicPartition
from kafka_helpers import clicks_graph, produce, wait_until

from goka_ray import codecs
from goka_ray.errors import FencedError
from goka_ray.kafka.clients import client_config, make_consumer
from goka_ray.kafka.epochs import EPOCH_HEADER, changelog_epochs
from goka_ray.kafka.runner import PartitionRunner, RunnerConfig
from goka_ray.kafka.topics import TopicManager

INT = codecs.Int()


def committed(brokers: str, group: str, topic: str) -> int:
    consumer = make_consumer(brokers, group)
    try:
        (tp,) = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        return int(tp.offset)
    finally:
        consumer.close()


def test_a_fenced_runner_does_not_make_its_final_commit(kafka, unique, tmp_path):
    """The old owner's last commit would move the group's offsets back behind the new owner's
    (its batches are re-processed: duplicates, or worse with side effects); the final commit
    is a write and needs a valid lease like any other."""
    brokers = kafka.bootstrap_servers
    topic = f"{unique}-clicks"
    graph = clicks_graph(f"{unique}-counter", topic)
    with TopicManager(brokers) as topics:
        topics.ensure_stream(topic, 1)
        topics.ensure_group_topics(graph)
    lease = {"valid": True}

    def old_lease() -> None:
        if not lease["valid"]:
            raise FencedError("partition 0: epoch 1 is no longer current")

    config = RunnerConfig(batch_size=100)
    produce(brokers, topic, [(f"u{i}", b"click") for i in range(10)])
    old = PartitionRunner(
        brokers, graph, 0, storage_dir=tmp_path / "old", config=config, fence=old_lease, epoch=1
    )
    old.recover()
    old.start_processing()
    wait_until(lambda: old.run_once() > 0 and old.status().offsets.get(topic) == 10, 30)
    wait_until(lambda: committed(brokers, graph.group, topic) == 10, 30, "the old commit")

    lease["valid"] = False  # the coordinator made epoch 2 current: the old owner hangs here
    produce(brokers, topic, [(f"u{i}", b"click") for i in range(10)])
    new = PartitionRunner(brokers, graph, 0, storage_dir=tmp_path / "new", config=config, epoch=2)
    new.recover()
    new.start_processing()
    wait_until(lambda: new.run_once() > 0 and new.status().offsets.get(topic) == 20, 30)
    new.close()
    assert committed(brokers, graph.group, topic) == 20

    old.close()  # the stale owner wakes up and stops
    assert committed(brokers, graph.group, topic) == 20, "the stale owner moved the offsets back"


def test_the_changelog_shows_the_highest_epoch_of_each_partition(kafka, unique):
    brokers = kafka.bootstrap_servers
    table = f"{unique}-counter-table"
    with TopicManager(brokers) as topics:
        topics.ensure_table(table, 3)
    producer = Producer(client_config(brokers, {"linger.ms": 20}))

    def write(partition: int, epoch: int | None, n: int) -> None:
        headers = None if epoch is None else [(EPOCH_HEADER, str(epoch).encode())]
        for i in range(n):
            producer.produce(
                table,
                key=f"k{i}".encode(),
                value=INT.encode(i),
                partition=partition,
                headers=headers,
            )
        assert producer.flush(30) == 0

    write(0, 1, 50)
    write(0, 4, 30)  # the newest owner of partition 0 wrote under epoch 4
    write(1, 7, 5)
    write(1, None, 120)  # then records without a header (another tool): the floor is further back
    started = time.monotonic()
    floors = changelog_epochs(brokers, table, tail=20)
    assert floors == {0: 4, 1: 7}, "partition 2 is empty: no floor"
    assert time.monotonic() - started < 20
    assert changelog_epochs(brokers, f"{unique}-no-such-table") == {}
