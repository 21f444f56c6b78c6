"""TopicManager: creation, co-partitioning and error messages, against the real broker."""

from __future__ import annotations

import socket
import time

import pytest

from goka_ray import Input, Join, Persist, codecs, define_group
from goka_ray.errors import BrokerError, TopicError
from goka_ray.examples import count_click
from goka_ray.kafka.topics import TopicManager


def test_group_topics_are_created_with_the_inputs_partition_count(kafka, unique):
    from goka_ray import Loop

    graph = define_group(
        f"{unique}-g",
        Input(f"{unique}-in", codecs.String(), count_click, on_decode_error="dead_letter"),
        Loop(codecs.String(), count_click),
        Persist(codecs.Int()),
    )
    with TopicManager(kafka.bootstrap_servers) as topics:
        topics.ensure_stream(f"{unique}-in", 5)
        created: set[str] = set()
        assert topics.ensure_group_topics(graph, created=created) == 5
        assert created == {graph.table_topic, graph.loop_topic, graph.dead_letter_topic}
        assert topics.partitions(graph.table_topic) == 5
        assert topics.partitions(graph.loop_topic) == 5
        assert topics.partitions(graph.dead_letter_topic) == 5
        assert topics.partitions(f"{unique}-nope") is None
        # idempotent: nothing is created the second time
        again: set[str] = set()
        assert topics.ensure_group_topics(graph, created=again) == 5
        assert again == set()


def test_table_topics_are_compacted(kafka, unique):
    from confluent_kafka.admin import AdminClient, ConfigResource

    with TopicManager(kafka.bootstrap_servers) as topics:
        topics.ensure_table(f"{unique}-table", 2)
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    resource = ConfigResource("topic", f"{unique}-table")
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert configs["cleanup.policy"].value == "compact"


def test_copartitioning_error_lists_each_topic_and_count(kafka, unique):
    graph = define_group(
        f"{unique}-g",
        Input(f"{unique}-a", codecs.String(), count_click),
        Join(f"{unique}-users", codecs.String()),
        Persist(codecs.Int()),
    )
    with TopicManager(kafka.bootstrap_servers) as topics:
        topics.ensure_stream(f"{unique}-a", 4)
        topics.ensure_table(f"{unique}-users", 3)
        with pytest.raises(TopicError) as info:
            topics.ensure_group_topics(graph)
    message = str(info.value)
    assert f"{unique}-a: 4" in message and f"{unique}-users: 3" in message
    assert "co-partitioning" in message


def test_existing_topic_with_another_count_is_an_error(kafka, unique):
    with TopicManager(kafka.bootstrap_servers) as topics:
        topics.ensure_stream(f"{unique}-s", 2)
        with pytest.raises(TopicError, match="has 2 partitions, expected 3"):
            topics.ensure_stream(f"{unique}-s", 3)


def test_missing_input_topic_error_says_how_to_create_it(kafka, unique):
    graph = define_group(f"{unique}-g", Input(f"{unique}-missing", codecs.String(), count_click))
    with TopicManager(kafka.bootstrap_servers) as topics, pytest.raises(TopicError) as info:
        topics.ensure_group_topics(graph)
    assert f"{unique}-missing" in str(info.value) and "ensure_stream" in str(info.value)


def test_unreachable_broker_fails_fast_naming_the_servers():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    brokers = f"127.0.0.1:{port}"
    started = time.monotonic()
    with pytest.raises(BrokerError) as info:
        TopicManager(brokers, timeout=2).partitions("x")
    assert time.monotonic() - started < 10
    assert brokers in str(info.value) and "bootstrap.servers" in str(info.value)


def test_end_offsets_of_empty_partitions_need_no_fetch_and_others_are_read_to_their_end(
    kafka, unique, caplog
):
    # a fetch of an empty log is held for fetch.wait.max.ms (60 s here): the ends of empty
    # partitions come from ListOffsets alone, at once; a partition with records is still read
    # to its end, which the local broker's ListOffsets under-reports for a multi-record batch
    from kafka_helpers import produce

    from goka_ray.kafka.clients import end_offsets, make_consumer

    brokers = kafka.bootstrap_servers
    topic = f"{unique}-ends"
    with TopicManager(brokers) as topics:
        topics.ensure_stream(topic, 2)
    consumer = make_consumer(brokers, f"{unique}-probe", config={"fetch.wait.max.ms": 60000})
    try:
        started = time.monotonic()
        assert end_offsets(consumer, [(topic, 0), (topic, 1)]) == {(topic, 0): 0, (topic, 1): 0}
        assert time.monotonic() - started < 8  # below the 10 s give-up, far below a held fetch
        assert consumer.assignment() == []
        written = produce(brokers, topic, [(f"k{i}", b"v") for i in range(40)])
        full = max(written, key=lambda p: written[p])
        empty = 1 - full if len(written) == 1 else None
        ends = end_offsets(consumer, [(topic, p) for p in (0, 1)])
        assert ends[(topic, full)] == written[full]
        if empty is not None:
            assert ends[(topic, empty)] == 0
        assert consumer.assignment() == []
    finally:
        consumer.close()
    assert "could not confirm the end" not in caplog.text
