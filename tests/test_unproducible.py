"""Records Kafka refuses (issue 11, item 1), as a kind: any record goka-ray produces (changelog,
emit, loopback, dead letter) that is too large, or that the broker refuses, is reported with
the group, the input message that made it, the output topic and the limit, goes through the
input's on_error policy like a raising callback, and a failed batch leaves nothing behind that
a restart would count again.

The issue's example: one partition; the callback stores a 1.2 MB string under key ``big`` and
counts the other keys; inputs a, a, a, big, b in one batch. Seen before: a bare
``KafkaException(MSG_SIZE_TOO_LARGE)``, and the changelog's ``a`` going 3 -> 6 -> 9 over restarts.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import KafkaException, Producer
from kafka_helpers import latest_values, produce, read_records, read_topic

from goka_ray import (
    Context,
    GroupGraph,
    Input,
    Loop,
    Output,
    Persist,
    ProcessingError,
    Tester,
    codecs,
    define_group,
)
from goka_ray.core.limits import DEFAULT_MAX_MESSAGE_BYTES, RecordLimit, record_size
from goka_ray.errors import RecordRejected
from goka_ray.kafka.publish import ROLLBACK_HEADER
from goka_ray.kafka.runner import PartitionRunner, RunnerConfig, RunnerState
from goka_ray.kafka.topics import TopicManager

JSON = codecs.Json()
BIG = "x" * 1_200_000


def store_big_count_rest(ctx: Context, msg: str) -> None:
    if ctx.key == "big":
        ctx.set_value(BIG)
    else:
        ctx.set_value((ctx.value() or 0) + 1)


def issue_graph(group: str, topic: str, on_error: str) -> GroupGraph:
    return define_group(
        group, Input(topic, codecs.String(), store_big_count_rest, on_error=on_error), Persist(JSON)
    )


INPUTS = [("a", b"1"), ("a", b"2"), ("a", b"3"), ("big", b"4"), ("b", b"5")]


# -- the size limit, as librdkafka computes it ----------------------------------------------


def test_the_core_computes_the_size_librdkafka_refuses() -> None:
    producer = Producer({"bootstrap.servers": "127.0.0.1:9", "message.max.bytes": 1000})
    headers = [("h", b"v" * 10), ("goka-ray.epoch", b"7")]
    limit = RecordLimit(1000, reserved_bytes=0)
    for value_len in (900, 930, 931, 932, 960):
        value = b"v" * value_len
        fits = limit.check("emit", "t", b"key", value, headers) is None
        try:
            producer.produce("t", key=b"key", value=value, headers=headers)
            accepted = True
        except KafkaException as exc:
            assert exc.args[0].name() == "MSG_SIZE_TOO_LARGE"
            accepted = False
        assert fits == accepted, (value_len, record_size(b"key", value, headers))
    producer.purge()


# -- the Tester enforces the same limit through the same core ---------------------------------


def test_tester_fails_on_a_record_over_the_limit_naming_the_message_topic_and_limit() -> None:
    t = Tester(issue_graph("g", "in", "fail"), partitions=1)
    for key, value in INPUTS[:3]:
        t.consume("in", key, value.decode())
    with pytest.raises(ProcessingError) as failed:
        t.consume("in", "big", "4")
    error = failed.value
    assert (error.group, error.topic, error.partition, error.offset, error.key) == (
        "g",
        "in",
        0,
        3,
        "big",
    )
    assert isinstance(error.error, RecordRejected)
    assert error.error.topic == "g-table" and error.error.limit == DEFAULT_MAX_MESSAGE_BYTES
    assert error.error.size is not None and error.error.size > 1_200_000
    assert "max_message_bytes" in str(error)
    assert t.table_value("g-table", "a") == 3 and t.table_value("g-table", "big") is None


@pytest.mark.parametrize("policy", ["skip", "dead_letter"])
def test_tester_skips_or_dead_letters_a_message_whose_record_is_too_large(policy: str) -> None:
    t = Tester(issue_graph("g", "in", policy), partitions=1)
    for key, value in INPUTS:
        t.consume("in", key, value.decode())
    assert dict(t.table_items("g-table")) == {"a": 3, "b": 1}
    dead = [m.key for m in t.messages("g-dlq")] if policy == "dead_letter" else []
    assert dead == (["big"] if policy == "dead_letter" else [])


def test_tester_limit_is_a_setting_and_covers_emits_and_loopbacks() -> None:
    def emit_or_loop(ctx: Context, msg: str) -> None:
        if ctx.key == "emit":
            ctx.emit("out", ctx.key, msg)
        else:
            ctx.loopback(ctx.key, msg)

    graph = define_group(
        "e",
        Input("in", codecs.String(), emit_or_loop),
        Output("out", codecs.String()),
        Loop(codecs.String(), lambda ctx, msg: None),
    )
    t = Tester(graph, partitions=1, max_message_bytes=2_000)
    t.consume("in", "emit", "x" * 1_000)  # fits
    t.consume("in", "loop", "x" * 1_000)
    with pytest.raises(ProcessingError, match="emit to 'out'") as failed:
        t.consume("in", "emit", "x" * 3_000)
    assert failed.value.error.limit == 2_000  # type: ignore[attr-defined]
    with pytest.raises(ProcessingError, match="loopback to 'e-loop'"):
        t.consume("in", "loop", "y" * 3_000)


# -- on the broker, across restarts -----------------------------------------------------------


def run_to_end(
    brokers: str, graph: GroupGraph, storage: Path, topic: str
) -> tuple[PartitionRunner, ProcessingError | None]:
    """Run a runner until it consumed the topic's 5 inputs, or failed; returns it closed, and
    what failed it."""
    runner = PartitionRunner(brokers, graph, 0, storage_dir=storage, config=RunnerConfig())
    failure = None
    runner.recover()
    runner.start_processing()
    try:
        while runner.status().offsets.get(topic, 0) < len(INPUTS):
            runner.run_once()
    except ProcessingError as exc:
        failure = exc
    finally:
        runner.close()
    return runner, failure


def changelog_of(brokers: str, graph: GroupGraph) -> list[tuple[str, object]]:
    return [
        (k.decode(), None if v is None else JSON.decode(v))
        for _, _, k, v in sorted(read_topic(brokers, graph.table_topic, 1))
        if k is not None
    ]


@pytest.fixture
def setup(kafka, unique):  # type: ignore[no-untyped-def]
    def make(policy: str) -> tuple[GroupGraph, str]:
        topic = f"{unique}-{policy}-in"
        graph = issue_graph(f"{unique}-{policy}", topic, policy)
        with TopicManager(kafka.bootstrap_servers) as topics:
            topics.ensure_stream(topic, 1)
            topics.ensure_group_topics(graph)
        produce(kafka.bootstrap_servers, topic, INPUTS)  # one go: one batch
        return graph, topic

    return make


def test_the_issue_example_fails_cleanly_and_restarts_never_inflate(kafka, setup, tmp_path):
    brokers = kafka.bootstrap_servers
    graph, topic = setup("fail")
    for _restart in range(3):
        runner, error = run_to_end(brokers, graph, tmp_path, topic)
        assert isinstance(error, ProcessingError), error
        assert (error.group, error.topic, error.partition, error.offset, error.key) == (
            graph.group,
            topic,
            0,
            3,
            "big",
        )
        assert isinstance(error.error, RecordRejected)
        assert error.error.topic == graph.table_topic
        assert error.error.limit == 1_000_000
        # the messages before `big` are published once; restarts do not count them again
        assert changelog_of(brokers, graph) == [("a", 3)]
        assert runner.status().offsets == {topic: 3}


@pytest.mark.parametrize("policy", ["skip", "dead_letter"])
def test_the_issue_example_skips_or_dead_letters_big_on_the_broker(kafka, setup, tmp_path, policy):
    brokers = kafka.bootstrap_servers
    graph, topic = setup(policy)
    for _restart in range(2):
        runner, error = run_to_end(brokers, graph, tmp_path, topic)
        assert error is None and runner.state == RunnerState.STOPPED
    assert latest_values(read_topic(brokers, graph.table_topic, 1)) == {
        b"a": JSON.encode(3),
        b"b": JSON.encode(1),
    }
    status = runner.status()  # the second run had nothing left to do
    assert status.offsets == {topic: 5} and status.processed == 0
    dead = read_records(brokers, graph.dead_letter_topic, 1) if policy == "dead_letter" else []
    if policy == "dead_letter":
        [(_, _, key, value, headers)] = dead
        assert (key, value) == (b"big", b"4")
        assert headers["goka-ray.stage"] == b"produce"
        assert headers["goka-ray.offset"] == b"3"
        assert b"RecordRejected" in headers["goka-ray.error"]


# -- a refusal only the broker can make: found message by message, rolled back ---------------


def tally_and_notify(output: str) -> object:
    def callback(ctx: Context, msg: str) -> None:
        ctx.set_value((ctx.value() or 0) + 1)
        if ctx.key == "x":
            ctx.emit(output, ctx.key, "x was seen")

    return callback


@pytest.mark.parametrize(
    ("policy", "guarantee"),
    [("fail", "at_least_once"), ("skip", "at_least_once"), ("fail", "exactly_once")],
)
def test_a_record_the_broker_refuses_is_attributed_to_its_message_and_rolled_back(
    kafka, unique, tmp_path, policy, guarantee
):
    brokers = kafka.bootstrap_servers
    topic, missing = f"{unique}-in", f"{unique}-not-created"
    graph = define_group(
        f"{unique}-notify",
        Input(topic, codecs.String(), tally_and_notify(missing), on_error=policy),  # type: ignore[arg-type]
        Output(missing, codecs.String()),
        Persist(JSON),
    )
    with TopicManager(brokers) as topics:
        topics.ensure_stream(topic, 1)
        topics.ensure_group_topics(graph)
    produce(brokers, topic, [("a", b"1"), ("a", b"2"), ("x", b"3"), ("b", b"4")])
    # a broker that creates no topic on produce refuses the emit to the missing output
    config = RunnerConfig(
        processing_guarantee=guarantee,
        producer_config={
            "allow.auto.create.topics": False,
            "topic.metadata.propagation.max.ms": 500,
        },
    )
    for _restart in range(2):
        runner = PartitionRunner(brokers, graph, 0, storage_dir=tmp_path, config=config)
        runner.recover()
        runner.start_processing()
        try:
            while runner.status().offsets.get(topic, 0) < 4:
                runner.run_once()
            if _restart == 0:  # the batch was processed twice; each message counts once
                assert (runner.status().processed, runner.status().unproducible) == (3, 1)
        except ProcessingError as exc:
            if _restart == 0:
                assert runner.status().processed == 2
            assert policy == "fail"
            assert (exc.topic, exc.offset, exc.key) == (topic, 2, "x")
            assert isinstance(exc.error, RecordRejected)
            assert exc.error.topic == missing
            # from the broker, or from the producer once it learnt the topic does not exist
            assert exc.error.reason in ("UNKNOWN_TOPIC_OR_PART", "_UNKNOWN_TOPIC")
        finally:
            runner.close()
    # what a new owner recovers from the changelog (Tansu hands aborted transactions to
    # read_committed readers; the runner's recovery leaves them out)
    fresh = PartitionRunner(brokers, graph, 0, storage_dir=tmp_path / "fresh", config=config)
    try:
        fresh.recover()
        assert fresh.core.table is not None
        latest = {k.decode(): JSON.decode(v) for k, v in fresh.core.table.storage.iterate()}
    finally:
        fresh.close()
    # the failed batch's writes were rolled back (at-least-once) or aborted (exactly-once);
    # the messages were then published one by one
    expected = {"a": 2} if policy == "fail" else {"a": 2, "b": 1}
    assert latest == expected
    rollbacks = [r for r in read_records(brokers, graph.table_topic, 1) if ROLLBACK_HEADER in r[4]]
    assert bool(rollbacks) == (guarantee == "at_least_once")


def test_a_record_the_producer_refuses_at_once_rolls_back_what_went_before(kafka, unique):
    """The sync refusal (produce() raising): earlier records of the batch are dropped or
    covered by the stored values, and the error names the record and the limit."""
    from goka_ray.core.partition import BatchResult
    from goka_ray.core.partitioner import MURMUR2
    from goka_ray.kafka.clients import make_consumer
    from goka_ray.kafka.publish import AtLeastOncePublisher

    brokers = kafka.bootstrap_servers
    table = f"{unique}-table"
    with TopicManager(brokers) as topics:
        topics.ensure_table(table, 1)
    produce(brokers, table, [("a", JSON.encode(1))])
    stored = {b"a": JSON.encode(1)}
    discarded: list[bool] = []
    consumer = make_consumer(brokers, unique)
    publisher = AtLeastOncePublisher(
        brokers,
        group=unique,
        partition=0,
        table_topic=table,
        consumer=consumer,
        partitioner=MURMUR2,
        partition_count=lambda topic: 1,
        store=lambda result, offset: pytest.fail("a refused batch is never stored"),
        discard=lambda result: discarded.append(True),
        stored=stored.get,
        producer_config={"message.max.bytes": 1_000},
    )
    result = BatchResult(table_writes={b"a": JSON.encode(2), b"huge": b"x" * 2_000})
    with pytest.raises(RecordRejected, match="changelog record") as refused:
        publisher.publish(result, {})
    assert refused.value.key == "huge" and refused.value.limit == 1_000
    assert refused.value.reason == "MSG_SIZE_TOO_LARGE" and discarded == [True]
    publisher.close({})
    consumer.close()
    assert latest_values(read_topic(brokers, table, 1)) == {b"a": JSON.encode(1)}
