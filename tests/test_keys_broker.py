"""Keys that are not UTF-8 and messages without a key, as the partition runner meets them on
the real local broker (real LevelDB): a Goka service sharing the changelog, an emitter with
bytes keys, producers that send no key."""

from __future__ import annotations

from typing import Any

import pytest
from kafka_helpers import Running, read_records, read_topic, runners_for

from goka_ray import (
    MURMUR2,
    Context,
    Emitter,
    Input,
    Persist,
    Visitor,
    codecs,
    define_group,
)
from goka_ray.kafka.clients import make_producer
from goka_ray.kafka.topics import TopicManager

S, INT = codecs.String(), codecs.Int()
MAC = b"\x00\x85mac"  # as a Goka service (Go strings are bytes) may write it


def count(ctx: Context, msg: Any) -> None:
    ctx.set_value((ctx.value() or 0) + 1)


def produce_raw(brokers: str, topic: str, records: list[tuple[bytes | None, bytes, int]]) -> None:
    """Produce (key, value, partition) records as any Kafka client can, keyless ones too."""
    producer = make_producer(brokers)
    for key, value, partition in records:
        producer.produce(topic, key=key, value=value, partition=partition)
    assert producer.flush(30) == 0


def test_a_goka_key_in_the_changelog_and_the_input_is_counted_and_visited(
    kafka, unique, tmp_path
) -> None:
    brokers = kafka.bootstrap_servers
    topic = f"{unique}-in"
    seen: list[tuple[str | None, bytes | None, Any]] = []
    graph = define_group(
        f"{unique}-g",
        Input(topic, S, count),
        Persist(INT),
        Visitor("read", lambda ctx, meta: seen.append((ctx.key, ctx.key_bytes, ctx.value()))),
    )
    with TopicManager(brokers) as topics:
        topics.ensure_stream(topic, 1)
        topics.ensure_group_topics(graph)
    # a Goka service sharing the changelog wrote a key that is not UTF-8
    produce_raw(brokers, graph.table_topic, [(MAC, INT.encode(5), 0), (b"bob", INT.encode(1), 0)])
    with Emitter(brokers, topic, S) as emitter:
        emitter.emit_sync(MAC, "click")  # bytes
        emitter.emit_sync("\x00\udc85mac", "click")  # the same key as goka-ray hands it out
    [runner] = runners_for(brokers, graph, [0], tmp_path)
    with Running([runner]) as running:
        running.wait_for_offsets(topic, {0: 2})
        assert runner.visit("read", timeout=60) == 2
    assert seen == [("\x00\udc85mac", MAC, 7), ("bob", b"bob", 1)]
    changelog = [(k, v) for _, _, k, v in read_topic(brokers, graph.table_topic, 1)]
    assert changelog[-1] == (MAC, INT.encode(7))
    assert all(k in (MAC, b"bob") for k, _ in changelog)


@pytest.mark.parametrize("policy", ["skip", "dead_letter"])
def test_keyless_messages_are_never_stored_and_are_counted_or_dead_lettered(
    kafka, unique, tmp_path, policy
) -> None:
    brokers = kafka.bootstrap_servers
    topic = f"{unique}-in"
    graph = define_group(f"{unique}-g", Input(topic, S, count, null_key=policy), Persist(INT))
    with TopicManager(brokers) as topics:
        topics.ensure_stream(topic, 2)
        topics.ensure_group_topics(graph)
    keyed = MURMUR2.partition(b"ann", 2)
    other = 1 - keyed
    produce_raw(
        brokers,
        topic,
        [(None, b"x", other), (b"ann", b"x", keyed), (None, b"y", keyed), (None, b"z", other)],
    )
    runners = runners_for(brokers, graph, [0, 1], tmp_path)
    ends = {keyed: 2, other: 2}
    with Running(runners) as running:
        running.wait_for_offsets(topic, ends)
        statuses = {r.partition: r.status() for r in runners}
        cores = {r.partition: r.core.stats for r in runners}
    assert statuses[keyed].processed == 1
    assert sum(c.null_keys for c in cores.values()) == 3
    changelog = read_topic(brokers, graph.table_topic, 2)
    assert [(p, k, INT.decode(v)) for p, _, k, v in changelog if v] == [(keyed, b"ann", 1)]
    if policy == "skip":
        assert (statuses[keyed].skipped, statuses[other].skipped) == (1, 2)
    else:
        assert (statuses[keyed].dead_lettered, statuses[other].dead_lettered) == (1, 2)
        dlq = read_records(brokers, graph.dead_letter_topic, 2)
        got = sorted((p, k, v, h["goka-ray.stage"]) for p, _, k, v, h in dlq)
        assert got == sorted(
            [
                (other, None, b"x", b"null_key"),
                (keyed, None, b"y", b"null_key"),
                (other, None, b"z", b"null_key"),
            ]
        )
