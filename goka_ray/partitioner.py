"""Key -> partition, the same everywhere in goka-ray (emitters, outputs, changelogs, views).

The default is Kafka's Java-client partitioner: murmur2 of the key bytes, sign bit cleared,
modulo the partition count (librdkafka calls it ``murmur2_random``). Java, Go (sarama's
``NewReferenceHashPartitioner``) and goka-ray producers therefore agree on partitions.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["MURMUR2", "Murmur2Partitioner", "Partitioner", "murmur2"]

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (seed 0x9747b28c) as an unsigned 32-bit int."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    end = length - (length & 3)
    for i in range(0, end, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length & 3
    if rest == 3:
        h ^= data[end + 2] << 16
    if rest >= 2:
        h ^= data[end + 1] << 8
    if rest >= 1:
        h ^= data[end]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


class Partitioner(Protocol):
    """Chooses the partition of a key."""

    #: the librdkafka ``partitioner`` setting that computes the same, or None if none does
    librdkafka_name: str | None

    def partition(self, key: bytes, partitions: int) -> int: ...


class Murmur2Partitioner:
    """Kafka's default (Java) partitioner."""

    librdkafka_name: str | None = "murmur2_random"

    def partition(self, key: bytes, partitions: int) -> int:
        return (murmur2(key) & 0x7FFFFFFF) % partitions


MURMUR2 = Murmur2Partitioner()
