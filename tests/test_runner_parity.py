"""Inputs, callback error policies and Goka's partitioner, driven by the runner against the
local broker."""

from __future__ import annotations

from collections import Counter

import pytest
from kafka_helpers import Running, produce, read_topic, runners_for

from goka_ray import GOKA, Context, Emitter, Input, Inputs, Persist, codecs, define_group
from goka_ray.kafka.runner import RunnerConfig
from goka_ray.kafka.topics import TopicManager

PARTITIONS = 4


def count(ctx: Context, msg: str) -> None:
    ctx.set_value((ctx.value() or 0) + 1)


def test_inputs_count_several_streams_with_one_callback(kafka, unique, tmp_path):
    brokers = kafka.bootstrap_servers
    a, b = f"{unique}-web", f"{unique}-app"
    graph = define_group(
        f"{unique}-counter", Inputs([a, b], codecs.String(), count), Persist(codecs.Int())
    )
    with TopicManager(brokers) as topics:
        topics.ensure_stream(a, PARTITIONS)
        topics.ensure_stream(b, PARTITIONS)
        topics.ensure_group_topics(graph)
    ends_a = produce(brokers, a, [(f"u{i % 7}", b"x") for i in range(300)])
    ends_b = produce(brokers, b, [(f"u{i % 7}", b"x") for i in range(200)])
    truth = Counter(f"u{i % 7}" for i in range(300)) + Counter(f"u{i % 7}" for i in range(200))
    with Running(runners_for(brokers, graph, range(PARTITIONS), tmp_path)) as running:
        running.wait_for_offsets(a, ends_a)
        running.wait_for_offsets(b, ends_b)
    records = read_topic(brokers, graph.table_topic, PARTITIONS)
    latest = {k.decode(): codecs.Int().decode(v) for _, _, k, v in records if k and v}
    assert latest == dict(truth)


def fussy(ctx: Context, msg: str) -> None:
    if ctx.key.startswith("bad"):
        raise ValueError(f"cannot count {ctx.key}")
    ctx.set_value((ctx.value() or 0) + 1)


@pytest.mark.parametrize("policy", ["skip", "dead_letter"])
def test_a_raising_callback_is_skipped_or_dead_lettered(kafka, unique, tmp_path, policy):
    brokers = kafka.bootstrap_servers
    topic = f"{unique}-clicks"
    graph = define_group(
        f"{unique}-counter",
        Input(topic, codecs.String(), fussy, on_error=policy),
        Persist(codecs.Int()),
    )
    with TopicManager(brokers) as topics:
        topics.ensure_stream(topic, 1)
        topics.ensure_group_topics(graph)
    items = [("good", b"x"), ("bad-1", b"payload-1"), ("good", b"x"), ("bad-2", b"payload-2")]
    ends = produce(brokers, topic, items)
    runners = runners_for(brokers, graph, [0], tmp_path)
    with Running(runners) as running:
        running.wait_for_offsets(topic, ends)
        status = runners[0].status()
    assert status.processed == 2 and status.callback_errors == 2
    changelog = read_topic(brokers, graph.table_topic, 1)
    assert {(k, codecs.Int().decode(v)) for _, _, k, v in changelog if v} >= {(b"good", 2)}
    assert not [k for _, _, k, _ in changelog if k and k.startswith(b"bad")]
    if policy == "skip":
        assert status.skipped == 2 and status.dead_lettered == 0
    else:
        assert status.dead_lettered == 2
        dlq = read_topic(brokers, graph.dead_letter_topic, 1)
        assert [(k, v) for _, _, k, v in dlq] == [
            (b"bad-1", b"payload-1"),
            (b"bad-2", b"payload-2"),
        ]


def test_a_group_with_gokas_partitioner_keeps_keys_where_goka_puts_them(kafka, unique, tmp_path):
    brokers = kafka.bootstrap_servers
    topic = f"{unique}-clicks"
    graph = define_group(
        f"{unique}-counter", Input(topic, codecs.String(), count), Persist(codecs.Int())
    )
    with TopicManager(brokers) as topics:
        topics.ensure_stream(topic, PARTITIONS)
        topics.ensure_group_topics(graph)
    keys = [f"user-{i}" for i in range(60)]
    with Emitter(brokers, topic, codecs.String(), partitioner=GOKA) as emitter:
        deliveries = [emitter.emit(k, "click") for k in keys]
        emitter.flush(30)
    ends: dict[int, int] = {}
    for k, d in zip(keys, deliveries, strict=True):
        delivery = d.result(30)
        assert delivery.partition == GOKA.partition(k.encode(), PARTITIONS)
        ends[delivery.partition] = max(ends.get(delivery.partition, 0), delivery.offset + 1)
    config = RunnerConfig(partitioner="goka")
    with Running(runners_for(brokers, graph, range(PARTITIONS), tmp_path, config)) as running:
        running.wait_for_offsets(topic, ends)
    changelog = read_topic(brokers, graph.table_topic, PARTITIONS)
    assert sorted(k.decode() for _, _, k, _ in changelog if k) == sorted(keys)
    for partition, _, key, _ in changelog:
        assert key is not None and partition == GOKA.partition(key, PARTITIONS)
