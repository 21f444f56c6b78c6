"""Key -> partition, the same everywhere in goka-ray (emitters, outputs, changelogs, views).

The default is Kafka's Java-client partitioner: murmur2 of the key bytes, sign bit cleared,
modulo the partition count (librdkafka calls it ``murmur2_random``). Java, Go (sarama's
``NewReferenceHashPartitioner``) and goka-ray producers therefore agree on partitions.

:data:`GOKA` is Goka's default instead (FNV-1a 32-bit, see :class:`GokaPartitioner`): use it
to share topics with Go processors built with Goka's defaults. librdkafka has no partitioner
that computes it, so goka-ray producers choose the partition themselves with it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
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
    "murmur2_many",
    "partitioner_named",
    "partitions_of",
]

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (seed 0x9747b28c) as an unsigned 32-bit int."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    blocks = length >> 2
    if blocks:
        unpack = _WORDS.get(blocks)
        if unpack is None:
            unpack = _WORDS[blocks] = struct.Struct(f"<{blocks}I").unpack_from
        for k in unpack(data):
            k = (k * _M) & _MASK
            k ^= k >> 24
            h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    end = blocks << 2
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


_WORDS: dict[int, Callable[[bytes], tuple[int, ...]]] = {}  # little-endian words by count
#: below this many keys, hashing them one by one is as fast as with numpy
VECTOR_MIN = 32


def murmur2_many(keys: Sequence[bytes]) -> list[int]:
    """:func:`murmur2` of each key, computed with numpy for all keys at once (about 10x faster
    than one by one for a thousand keys: a view's ``get_many`` hashes every key)."""
    n = len(keys)
    if n < VECTOR_MIN:
        return [murmur2(k) for k in keys]
    import numpy as np

    lengths = np.fromiter(map(len, keys), dtype=np.int64, count=n)
    width = (int(lengths.max()) >> 2) * 4 + 4  # room for every key's tail, zero padded
    buf = np.frombuffer(b"".join([k.ljust(width, b"\0") for k in keys]), dtype=np.uint8)
    buf = buf.reshape(n, width)
    words = buf.view("<u4").astype(np.uint64)  # (n, width / 4)
    blocks = lengths >> 2
    h = (np.uint64(0x9747B28C) ^ lengths.astype(np.uint64)) & _MASK
    for j in range(int(blocks.max())):
        k = (words[:, j] * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = np.where(blocks > j, ((h * _M) & _MASK) ^ k, h)
    # the tail: up to 3 bytes after the last whole word (padding bytes are 0: XOR no-ops)
    rows = np.arange(n)
    end = blocks * 4
    h ^= buf[rows, end + 2].astype(np.uint64) << 16
    h ^= buf[rows, end + 1].astype(np.uint64) << 8
    h = np.where((lengths & 3) > 0, ((h ^ buf[rows, end].astype(np.uint64)) * _M) & _MASK, h)
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    out: list[int] = h.tolist()
    return out


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

    def partition_many(self, keys: Sequence[bytes], partitions: int) -> list[int]:
        """The partition of each key (hashed all at once, see :func:`murmur2_many`)."""
        return [(h & 0x7FFFFFFF) % partitions for h in murmur2_many(keys)]


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


def partitions_of(partitioner: Partitioner, keys: Sequence[bytes], partitions: int) -> list[int]:
    """The partition of each of ``keys``: with the partitioner's ``partition_many`` if it has
    one (murmur2 hashes many keys at once), else key by key."""
    many = getattr(partitioner, "partition_many", None)
    if many is not None:
        result: list[int] = many(keys, partitions)
        return result
    return [partitioner.partition(k, partitions) for k in keys]


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
