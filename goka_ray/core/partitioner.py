"""Key -> partition, the same everywhere in goka-ray (emitters, outputs, changelogs, views).

The default is Kafka's Java-client partitioner: murmur2 of the key bytes, sign bit cleared,
modulo the partition count (librdkafka calls it ``murmur2_random``). Java, Go (sarama's
``NewReferenceHashPartitioner``) and goka-ray producers therefore agree on partitions.

:data:`GOKA` is Goka's default instead (FNV-1a 32-bit, see :class:`GokaPartitioner`): use it
to share topics with Go processors built with Goka's defaults. librdkafka has no partitioner
that computes it, so goka-ray producers choose the partition themselves with it.
"""

from __future__ import annotations

from typing import Protocol

from goka_ray.errors import ConfigError

__all__ = [
    "GOKA",
    "MURMUR2",
    "GokaPartitioner",
    "Murmur2Partitioner",
    "Partitioner",
    "fnv1a32",
    "murmur2",
    "partitioner_named",
]

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


_FNV_OFFSET = 2166136261
_FNV_PRIME = 16777619


def fnv1a32(data: bytes) -> int:
    """FNV-1a, 32 bits (Go's ``hash/fnv.New32a``), as an unsigned 32-bit int."""
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & _MASK
    return h


class GokaPartitioner:
    """Goka's default partitioner: FNV-1a 32-bit of the key, as a signed int32, made positive.

    Goka producers use sarama's ``NewCustomHashPartitioner(fnv.New32a)``, which computes
    ``p = int32(sum) % n; if p < 0 { p = -p }`` (Go's ``%`` truncates toward zero). That equals
    ``abs(int32(sum)) % n`` for every hash, which is what this computes.

    One hash differs inside Goka itself: ``0x80000000`` (int32 ``-2147483648``). Goka's
    processor and view (``hash()``) negate *before* the modulo, which overflows in int32 and
    keeps the value negative, so they compute ``-(2**31 % n)``: partition 0 when ``n`` is a
    power of two (as sarama), but a negative, invalid partition otherwise (Goka then fails to
    find the key's partition). The message itself is placed by sarama at ``2**31 % n``, and so
    does this partitioner: a partition number is never negative here.
    """

    librdkafka_name: str | None = None

    def partition(self, key: bytes, partitions: int) -> int:
        h = fnv1a32(key)
        signed = h - (1 << 32) if h & 0x80000000 else h
        return abs(signed) % partitions


GOKA = GokaPartitioner()

_NAMED: dict[str, Partitioner] = {"murmur2": MURMUR2, "goka": GOKA}


def partitioner_named(name: str) -> Partitioner:
    """The partitioner called ``name``: ``"murmur2"`` (Kafka's default) or ``"goka"`` (FNV-1a).

    Raises :class:`~goka_ray.errors.ConfigError` for any other name.
    """
    found = _NAMED.get(name.strip().lower()) if isinstance(name, str) else None
    if found is None:
        raise ConfigError(
            f"unknown partitioner {name!r}; use one of {sorted(_NAMED)} ('murmur2' agrees with "
            f"Kafka's Java client, 'goka' with Go processors using Goka's default hasher)"
        )
    return found
