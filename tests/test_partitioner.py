"""One partitioner everywhere: murmur2 exactly as Kafka's Java client computes it."""

from __future__ import annotations

import pytest
from kafka_helpers import produce, read_topic

from goka_ray.core.partitioner import MURMUR2, murmur2
from goka_ray.kafka.topics import TopicManager

# Apache Kafka's UtilsTest.testMurmur2 vectors (signed Java ints)
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("data", "expected"), JAVA_MURMUR2.items())
def test_murmur2_equals_the_java_client(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected % 2**32


def test_partition_clears_the_sign_bit_like_java() -> None:
    # Java: (murmur2(key) & 0x7fffffff) % n; "foobar" hashes negative
    assert MURMUR2.partition(b"foobar", 50) == (-790332482 & 0x7FFFFFFF) % 50


def test_librdkafka_murmur2_random_places_keys_where_goka_ray_computes(kafka, unique):
    topic = f"{unique}-seven"
    with TopicManager(kafka.bootstrap_servers) as topics:
        topics.ensure_stream(topic, 7)
    keys = [f"key-{i}" for i in range(200)]
    produce(kafka.bootstrap_servers, topic, ((k, b"x") for k in keys))
    placed = {k.decode(): p for p, _, k, _ in read_topic(kafka.bootstrap_servers, topic, 7) if k}
    assert placed == {k: MURMUR2.partition(k.encode(), 7) for k in keys}
    assert len(set(placed.values())) == 7
