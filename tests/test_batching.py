"""Adaptive batches (issue 14): a batch is what has arrived, never a wait to fill one;
``batch_size`` bounds the work of a batch, not the wait for it."""

from __future__ import annotations

import pytest
from kafka_helpers import Running, clicks_graph, produce, wait_until

from goka_ray.kafka.runner import PartitionRunner, RunnerConfig
from goka_ray.kafka.topics import TopicManager


@pytest.fixture
def clicks(kafka, unique):  # type: ignore[no-untyped-def]
    topic = f"{unique}-clicks"
    graph = clicks_graph(f"{unique}-counter", topic)
    with TopicManager(kafka.bootstrap_servers) as topics:
        topics.ensure_stream(topic, 1)
        topics.ensure_group_topics(graph)
    return graph, topic


def test_a_batch_does_not_wait_to_fill_up(kafka, clicks, tmp_path):
    graph, topic = clicks
    brokers = kafka.bootstrap_servers
    # a poll timeout far longer than the wait below: before, consume(5000, timeout) held
    # every batch until the timeout unless 5,000 messages were there
    config = RunnerConfig(batch_size=5000, poll_timeout=30, fetch_wait_max_ms=100)
    runner = PartitionRunner(brokers, graph, 0, storage_dir=tmp_path, config=config)
    running = Running([runner]).__enter__()
    try:
        wait_until(lambda: runner.state.value == "running", 30, "the runner to process")
        ends = produce(brokers, topic, [("a", b"click")] * 3)
        running.wait_for_offsets(topic, ends, timeout=15)
        assert runner.status().processed == 3
    finally:
        runner.stop()
        produce(brokers, topic, [("wake", b"click")])  # the idle loop returns on a message
        running.__exit__()


def test_batch_size_bounds_the_work_of_a_batch(kafka, clicks, tmp_path):
    graph, topic = clicks
    brokers = kafka.bootstrap_servers
    produce(brokers, topic, [(f"k{i}", b"click") for i in range(25)])
    config = RunnerConfig(batch_size=10, poll_timeout=5)
    runner = PartitionRunner(brokers, graph, 0, storage_dir=tmp_path, config=config)
    try:
        runner.recover()
        runner.start_processing()
        sizes = []
        while sum(sizes) < 25:
            sizes.append(runner.run_once())
            assert sizes[-1] <= 10
        assert sum(sizes) == 25 and runner.status().offsets == {topic: 25}
    finally:
        runner.close()
