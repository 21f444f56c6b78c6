"""Table partitions: a storage plus the codec of its values, fed from a changelog.

Used for the group table, joined tables, lookup copies and views alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from goka_ray.codecs import Codec
from goka_ray.partitioner import MURMUR2, Partitioner
from goka_ray.storage import Storage, WriteBatch

__all__ = ["PartitionedTable", "TablePartition"]


class TablePartition:
    """One partition of a table: decoded reads and changelog application."""

    def __init__(self, topic: str, partition: int, storage: Storage, codec: Codec) -> None:
        self.topic = topic
        self.partition = partition
        self.storage = storage
        self.codec = codec

    def get(self, key: str) -> Any:
        raw = self.storage.get(key.encode("utf-8"))
        return None if raw is None else self.codec.decode(raw)

    def apply_changelog(
        self, records: Iterable[tuple[bytes | None, bytes | None]], next_offset: int
    ) -> int:
        """Write changelog records (value None = tombstone) and the offset reached, atomically.

        Returns the number of records applied. Records without a key cannot belong to a
        table and are ignored.
        """
        batch = WriteBatch()
        writes = batch.writes
        n = 0
        for key, value in records:
            if key is None:
                continue
            writes[key] = value
            n += 1
        batch.offset = next_offset
        self.storage.write(batch)
        return n

    @property
    def offset(self) -> int | None:
        return self.storage.offset()

    def __len__(self) -> int:
        return self.storage.key_count()


class PartitionedTable:
    """All partitions of one table, keys routed by the partitioner (for lookups and views)."""

    def __init__(
        self, topic: str, storages: Sequence[Storage], partitioner: Partitioner = MURMUR2
    ) -> None:
        if not storages:
            raise ValueError(f"table {topic!r} needs at least one partition")
        self.topic = topic
        self.storages = list(storages)
        self.partitioner = partitioner

    def partition_of(self, key: bytes) -> int:
        return self.partitioner.partition(key, len(self.storages))

    def get(self, key: bytes) -> bytes | None:
        return self.storages[self.partition_of(key)].get(key)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """All pairs ordered by key across partitions."""
        import heapq

        return heapq.merge(*(s.iterate() for s in self.storages), key=lambda kv: kv[0])

    def __len__(self) -> int:
        return sum(s.key_count() for s in self.storages)
