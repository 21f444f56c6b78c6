"""Where a new group starts reading (initial_offset), what it does with tombstones (nil), and
the core's visitors, deferred commits, headers and update callbacks as the runner drives
them, against the local broker."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from kafka_helpers import Running, clicks_graph, latest_values, produce, read_topic, wait_until

from goka_ray import (
    ConfigError,
    Context,
    DeferredCommit,
    GroupGraph,
    Input,
    LevelDBStorage,
    Persist,
    ProcessingError,
    Visitor,
    codecs,
    define_group,
)
from goka_ray.core.storage import partition_dir
from goka_ray.core.tables import UpdateContext, UpdateStorage
from goka_ray.kafka.clients import make_consumer, make_producer
from goka_ray.kafka.runner import PartitionRunner, RunnerConfig, RunnerState
from goka_ray.kafka.topics import TopicManager

INT = codecs.Int()
STRING = codecs.String()


def table(storage_dir: Path, group: str, topic: str, codec: codecs.Codec) -> dict[str, object]:
    storage = LevelDBStorage(partition_dir(storage_dir, group, topic, 0))
    try:
        return {k.decode(): codec.decode(v) for k, v in storage.iterate()}
    finally:
        storage.close()


@pytest.fixture
def clicks(kafka, unique):  # type: ignore[no-untyped-def]
    topic, group = f"{unique}-clicks", f"{unique}-counter"
    graph = clicks_graph(group, topic)
    with TopicManager(kafka.bootstrap_servers) as topics:
        topics.ensure_stream(topic, 1)
        topics.ensure_group_topics(graph)
    return graph, topic


def running_runner(brokers: str, graph: GroupGraph, storage: Path, config: RunnerConfig) -> Running:
    running = Running([PartitionRunner(brokers, graph, 0, storage_dir=storage, config=config)])
    running.__enter__()
    runner = running.runners[0]
    wait_until(lambda: runner.state == RunnerState.RUNNING, 30, "the runner to start processing")
    return running


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_latest_ignores_what_was_produced_before_a_new_group_started(
    kafka, clicks, tmp_path, guarantee
):
    graph, topic = clicks
    brokers = kafka.bootstrap_servers
    # one go: several multi-record batches (where ListOffsets under-reports the end on Tansu)
    produce(brokers, topic, [(f"old-{i % 3}", b"click") for i in range(30)])
    config = RunnerConfig(initial_offset="latest", processing_guarantee=guarantee)

    running = running_runner(brokers, graph, tmp_path, config)
    try:
        ends = produce(brokers, topic, [("new", b"click")] * 5)
        running.wait_for_offsets(topic, ends)
    finally:
        running.__exit__()
    assert table(tmp_path, graph.group, graph.table_topic, INT) == {"new": 5}


def test_latest_is_fixed_when_the_group_first_starts(kafka, clicks, tmp_path):
    graph, topic = clicks
    brokers = kafka.bootstrap_servers
    produce(brokers, topic, [("old", b"click")] * 10)
    config = RunnerConfig(initial_offset="latest")
    running_runner(brokers, graph, tmp_path, config).__exit__()  # stops before any new input
    # produced while the group is down: after the start, so a restart processes them
    ends = produce(brokers, topic, [("meanwhile", b"click")] * 3)
    running = running_runner(brokers, graph, tmp_path, config)
    try:
        running.wait_for_offsets(topic, ends)
    finally:
        running.__exit__()
    assert table(tmp_path, graph.group, graph.table_topic, INT) == {"meanwhile": 3}


def test_earliest_processes_what_was_produced_before_a_new_group_started(kafka, clicks, tmp_path):
    graph, topic = clicks
    brokers = kafka.bootstrap_servers
    produce(brokers, topic, [(f"old-{i % 3}", b"click") for i in range(30)])
    running = running_runner(brokers, graph, tmp_path, RunnerConfig(initial_offset="earliest"))
    try:
        ends = produce(brokers, topic, [("new", b"click")] * 5)
        running.wait_for_offsets(topic, ends)
    finally:
        running.__exit__()
    expected = {"old-0": 10, "old-1": 10, "old-2": 10, "new": 5}
    assert table(tmp_path, graph.group, graph.table_topic, INT) == expected


def describe(ctx: Context, msg: str | None) -> None:
    ctx.set_value("<nil>" if msg is None else f"={msg}")


@pytest.mark.parametrize(
    ("nil", "expected", "skipped"),
    [
        ("ignore", {"a": "=x", "c": "=y"}, 1),
        ("process", {"a": "=x", "b": "<nil>", "c": "=y"}, 0),
        ("decode", {"a": "=x", "b": "=", "c": "=y"}, 0),
    ],
)
def test_nil_policy_on_real_tombstones(kafka, unique, tmp_path, nil, expected, skipped):
    topic, group = f"{unique}-in", f"{unique}-nil-{nil}"
    graph = define_group(group, Input(topic, STRING, describe, nil=nil), Persist(STRING))
    brokers = kafka.bootstrap_servers
    with TopicManager(brokers) as topics:
        topics.ensure_stream(topic, 1)
        topics.ensure_group_topics(graph)
    ends = produce(brokers, topic, [("a", b"x"), ("b", None), ("c", b"y")])
    runner = PartitionRunner(brokers, graph, 0, storage_dir=tmp_path)
    with Running([runner]) as running:
        running.wait_for_offsets(topic, ends)
        status = runner.status()
    assert table(tmp_path, group, graph.table_topic, STRING) == expected
    assert (status.processed, status.skipped) == (3 - skipped, skipped)


# -- core features as the runner drives them: visitors, deferred commits, headers, updates ----


def counter_with_visitor(group: str, topic: str) -> GroupGraph:
    def count(ctx: Context, msg: str) -> None:
        ctx.set_value((ctx.value() or 0) + 1)

    def reset(ctx: Context, meta: int) -> None:
        ctx.set_value(meta)

    return define_group(group, Input(topic, STRING, count), Persist(INT), Visitor("reset", reset))


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_visit_runs_between_batches_and_publishes_its_writes(kafka, unique, tmp_path, guarantee):
    topic, group = f"{unique}-in", f"{unique}-visit"
    graph = counter_with_visitor(group, topic)
    brokers = kafka.bootstrap_servers
    with TopicManager(brokers) as topics:
        topics.ensure_stream(topic, 1)
        topics.ensure_group_topics(graph)
    ends = produce(brokers, topic, [("a", b"x"), ("b", b"x"), ("a", b"x")])
    config = RunnerConfig(processing_guarantee=guarantee)
    runner = PartitionRunner(brokers, graph, 0, storage_dir=tmp_path, config=config)
    with Running([runner]) as running:
        running.wait_for_offsets(topic, ends)
        assert runner.visit("reset", 10, timeout=30) == 2
        with pytest.raises(ConfigError, match="no Visitor"):
            runner.visit("missing", timeout=30)
        ends = produce(brokers, topic, [("a", b"x")])
        running.wait_for_offsets(topic, ends)
        assert runner.status().visited == 2
    assert table(tmp_path, group, graph.table_topic, INT) == {"a": 11, "b": 10}
    changelog = latest_values(read_topic(brokers, graph.table_topic, 1))
    assert {k.decode(): INT.decode(v) for k, v in changelog.items()} == {"a": 11, "b": 10}


def test_offsets_wait_for_deferred_commits(kafka, unique, tmp_path):
    topic, group = f"{unique}-in", f"{unique}-deferred"
    pending: list[DeferredCommit] = []

    def hand_off(ctx: Context, msg: str) -> None:
        ctx.set_value(msg)
        pending.append(ctx.defer_commit())

    graph = define_group(group, Input(topic, STRING, hand_off), Persist(STRING))
    brokers = kafka.bootstrap_servers
    with TopicManager(brokers) as topics:
        topics.ensure_stream(topic, 1)
        topics.ensure_group_topics(graph)
    produce(brokers, topic, [("a", b"1"), ("b", b"2")])
    runner = PartitionRunner(brokers, graph, 0, storage_dir=tmp_path)
    reader = make_consumer(brokers, group)

    def committed() -> int:
        return int(reader.committed([TopicPartition(topic, 0)], timeout=10)[0].offset)

    with Running([runner]):
        wait_until(lambda: len(pending) == 2, 30, "both messages to be handled")
        time.sleep(0.5)
        assert committed() < 0  # nothing committed while the work is out
        for done in pending:
            done()
        wait_until(lambda: runner.status().offsets.get(topic) == 2, 30, "the offsets")
    assert committed() == 2
    reader.close()


def test_a_failed_deferred_commit_fails_the_partition(kafka, unique, tmp_path):
    topic, group = f"{unique}-in", f"{unique}-deferred-fail"

    def hand_off(ctx: Context, msg: str) -> None:
        ctx.defer_commit()(RuntimeError("the service said no"))

    graph = define_group(group, Input(topic, STRING, hand_off), Persist(STRING))
    brokers = kafka.bootstrap_servers
    with TopicManager(brokers) as topics:
        topics.ensure_stream(topic, 1)
        topics.ensure_group_topics(graph)
    produce(brokers, topic, [("a", b"1")])
    runner = PartitionRunner(brokers, graph, 0, storage_dir=tmp_path)
    with pytest.raises(ProcessingError, match="the service said no"):
        runner.run()
    assert runner.state == RunnerState.FAILED
    assert runner.status().offsets == {}


def test_default_and_per_write_headers_reach_the_changelog(kafka, unique, tmp_path):
    topic, group = f"{unique}-in", f"{unique}-headers"

    def store(ctx: Context, msg: str) -> None:
        ctx.set_value(msg, headers={"source": "test"})

    graph = define_group(group, Input(topic, STRING, store), Persist(STRING))
    brokers = kafka.bootstrap_servers
    with TopicManager(brokers) as topics:
        topics.ensure_stream(topic, 1)
        topics.ensure_group_topics(graph)
    ends = produce(brokers, topic, [("a", b"1")])
    config = RunnerConfig(default_headers={"app": "billing"})
    runner = PartitionRunner(brokers, graph, 0, storage_dir=tmp_path, config=config, epoch=3)
    with Running([runner]) as running:
        running.wait_for_offsets(topic, ends)
    consumer = make_consumer(brokers, f"{group}-check")
    consumer.assign([TopicPartition(graph.table_topic, 0, 0)])
    (record,) = [m for m in consumer.consume(1, timeout=10) if m.error() is None]
    consumer.close()
    headers = dict(record.headers())
    assert headers == {"app": b"billing", "source": b"test", "goka-ray.epoch": b"3"}


def test_an_update_callback_sees_changelog_offsets_and_headers_in_recovery(kafka, unique, tmp_path):
    topic, group = f"{unique}-in", f"{unique}-update"
    seen: list[tuple[int, dict[str, bytes]]] = []

    def update(ctx: UpdateContext, storage: UpdateStorage, key: str, value: bytes | None) -> None:
        seen.append((ctx.offset, ctx.headers))
        if value is not None:
            storage.set(key, value)

    graph = define_group(group, Input(topic, STRING, describe), Persist(STRING, update=update))
    brokers = kafka.bootstrap_servers
    with TopicManager(brokers) as topics:
        topics.ensure_stream(topic, 1)
        topics.ensure_group_topics(graph)
    producer = make_producer(brokers)
    producer.produce(graph.table_topic, key=b"k", value=b"=v", partition=0, headers=[("h", b"1")])
    producer.flush(30)
    runner = PartitionRunner(brokers, graph, 0, storage_dir=tmp_path)
    try:
        assert runner.recover() == 1
    finally:
        runner.close()
    assert seen == [(0, {"h": b"1"})]
    assert table(tmp_path, group, graph.table_topic, STRING) == {"k": "=v"}
