"""One partitioner everywhere: murmur2 exactly as Kafka's Java client computes it."""

from __future__ import annotations

import random

import pytest
from kafka_helpers import produce, read_topic

from goka_ray.core.partitioner import GOKA, MURMUR2, murmur2, murmur2_many, partitions_of
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


def test_murmur2_of_many_keys_at_once_equals_one_by_one() -> None:
    rng = random.Random(7)
    keys = [bytes(rng.randrange(256) for _ in range(rng.randrange(0, 41))) for _ in range(500)]
    keys += [*JAVA_MURMUR2, b"", b"\xff" * 4, b"\xff" * 7]  # every tail length, all ones
    assert murmur2_many(keys) == [murmur2(k) for k in keys]
    assert murmur2_many(list(JAVA_MURMUR2)) == [h % 2**32 for h in JAVA_MURMUR2.values()]
    assert murmur2_many([]) == []
    assert partitions_of(MURMUR2, keys, 7) == [MURMUR2.partition(k, 7) for k in keys]
    assert partitions_of(GOKA, keys, 7) == [GOKA.partition(k, 7) for k in keys]


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
