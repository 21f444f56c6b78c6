"""Emitter against the real local broker."""

from __future__ import annotations

import pytest
from kafka_helpers import read_topic

from goka_ray import codecs
from goka_ray.core.partitioner import GOKA, MURMUR2
from goka_ray.errors import GokaRayError
from goka_ray.kafka.clients import make_consumer
from goka_ray.kafka.emitter import Delivery, Emitter
from goka_ray.kafka.topics import TopicManager


@pytest.fixture
def topic(kafka, unique):  # type: ignore[no-untyped-def]
    name = f"{unique}-events"
    with TopicManager(kafka.bootstrap_servers) as topics:
        topics.ensure_stream(name, 3)
    return name


def test_emit_futures_resolve_with_partition_and_offset(kafka, topic):
    with Emitter(kafka.bootstrap_servers, topic, codecs.Json(), linger_ms=1) as emitter:
        futures = [emitter.emit(f"user-{i}", {"n": i}) for i in range(30)]
        deliveries = [f.result(30) for f in futures]
    assert all(isinstance(d, Delivery) and d.topic == topic for d in deliveries)
    assert [d.partition for d in deliveries] == [
        MURMUR2.partition(f"user-{i}".encode(), 3) for i in range(30)
    ]
    records = read_topic(kafka.bootstrap_servers, topic, 3)
    assert sorted((p, o) for p, o, _, _ in records) == sorted(
        (d.partition, d.offset) for d in deliveries
    )
    assert {k: codecs.Json().decode(v) for _, _, k, v in records}[b"user-7"] == {"n": 7}


def test_emit_sync_none_value_is_a_tombstone_with_headers(kafka, topic):
    emitter = Emitter(kafka.bootstrap_servers, topic, codecs.String(), headers={"app": "test"})
    delivery = emitter.emit_sync("gone", None, headers={"why": b"deleted"})
    emitter.close()
    consumer = make_consumer(kafka.bootstrap_servers, "emitter-check")
    from confluent_kafka import TopicPartition

    consumer.assign([TopicPartition(topic, delivery.partition, delivery.offset)])
    msg = consumer.consume(1, timeout=10)[0]
    consumer.close()
    assert msg.value() is None and msg.key() == b"gone"
    assert dict(msg.headers()) == {"app": b"test", "why": b"deleted"}


def test_closed_emitter_refuses_to_emit_and_bad_keys_are_rejected(kafka, topic):
    emitter = Emitter(kafka.bootstrap_servers, topic, codecs.String)
    with pytest.raises(TypeError, match="key must be str"):
        emitter.emit(42, "x")  # type: ignore[arg-type]
    emitter.close()
    with pytest.raises(GokaRayError, match="closed"):
        emitter.emit("k", "v")


def test_goka_partitioner_places_keys_by_fnv1a(kafka, unique):
    name = f"{unique}-goka"
    with TopicManager(kafka.bootstrap_servers) as topics:
        topics.ensure_stream(name, 7)
    keys = [f"user-{i}" for i in range(60)] + ["goka-13897L2"]  # the last hashes to int32 min
    with Emitter(kafka.bootstrap_servers, name, codecs.String(), partitioner=GOKA) as emitter:
        deliveries = [emitter.emit(k, "x").result(30) for k in keys]
    expected = {k: GOKA.partition(k.encode(), 7) for k in keys}
    assert {k: d.partition for k, d in zip(keys, deliveries, strict=True)} == expected
    placed = {k.decode(): p for p, _, k, _ in read_topic(kafka.bootstrap_servers, name, 7) if k}
    assert placed == expected
    assert expected != {k: MURMUR2.partition(k.encode(), 7) for k in keys}
