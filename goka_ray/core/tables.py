"""Table partitions: a storage plus the codec of its values, fed from a changelog.

Used for the group table, joined tables, lookup copies and views alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from goka_ray.core.codecs import Codec
from goka_ray.core.keys import decode_key, encode_key
from goka_ray.core.messages import Headers, headers_dict
from goka_ray.core.partitioner import MURMUR2, Partitioner
from goka_ray.core.storage import Storage, WriteBatch
from goka_ray.errors import ProcessingError, StorageError

__all__ = [
    "ChangelogRecord",
    "PartitionedTable",
    "TablePartition",
    "UpdateCallback",
    "UpdateContext",
    "UpdateStorage",
    "default_update",
]

logger = logging.getLogger(__name__)


class ChangelogRecord(NamedTuple):
    """A changelog record with its coordinates, for :meth:`TablePartition.apply_changelog`.

    Plain ``(key, value)`` pairs are accepted too; they reach an update callback with
    ``offset=-1`` and no headers.
    """

    key: bytes | None
    value: bytes | None
    offset: int = -1
    headers: Headers | None = None


@dataclass(frozen=True)
class UpdateContext:
    """Where the changelog record an update callback gets comes from (Goka's UpdateContext).

    ``offset`` is -1 when the feeder did not say.
    """

    topic: str
    partition: int
    offset: int
    headers: dict[str, bytes] = field(default_factory=dict)


class UpdateStorage:
    """The table partition as an update callback sees it.

    Writes go into the batch being applied (atomically with the changelog offset, keeping the
    key count right); reads see the batch's earlier writes. Keys may be str or bytes.
    """

    __slots__ = ("_batch", "_storage")

    def __init__(self, storage: Storage, batch: WriteBatch) -> None:
        self._storage = storage
        self._batch = batch

    def get(self, key: str | bytes) -> bytes | None:
        """The stored (raw, encoded) value of ``key``, or None."""
        kb = encode_key(key, "update callback storage")
        writes = self._batch.writes
        if kb in writes:
            return writes[kb]
        return self._storage.get(kb)

    def has(self, key: str | bytes) -> bool:
        return self.get(key) is not None

    def set(self, key: str | bytes, value: bytes) -> None:
        """Store the raw (encoded) ``value`` for ``key``."""
        if not isinstance(value, bytes | bytearray):
            raise TypeError(
                f"update callback: storage.set({key!r}, ...) needs the encoded value as bytes, "
                f"not {type(value).__name__}; encode it with the table's codec"
            )
        self._batch.writes[encode_key(key, "update callback storage")] = bytes(value)

    def delete(self, key: str | bytes) -> None:
        """Remove ``key``."""
        self._batch.writes[encode_key(key, "update callback storage")] = None


#: ``update(ctx, storage, key, value)``: store a changelog record (value None = tombstone)
UpdateCallback = Callable[[UpdateContext, UpdateStorage, str, bytes | None], None]


def default_update(
    ctx: UpdateContext, storage: UpdateStorage, key: str, value: bytes | None
) -> None:
    """What a table does without an update callback: store the value, delete on None."""
    if value is None:
        storage.delete(key)
    else:
        storage.set(key, value)


class TablePartition:
    """One partition of a table: decoded reads and changelog application.

    ``update`` (see :class:`~goka_ray.core.graph.Persist`) replaces the default store/delete of each
    changelog record applied; ``group`` names the group in the errors it raises.
    """

    def __init__(
        self,
        topic: str,
        partition: int,
        storage: Storage,
        codec: Codec,
        *,
        update: UpdateCallback | None = None,
        group: str = "",
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.storage = storage
        self.codec = codec
        self.update = update
        self.group = group

    def get(self, key: str | bytes) -> Any:
        """The decoded value of ``key`` (str or bytes; None if absent)."""
        raw = self.storage.get(encode_key(key, f"table {self.topic!r}"))
        return None if raw is None else self.codec.decode(raw)

    def apply_changelog(
        self,
        records: Iterable[tuple[bytes | None, bytes | None] | ChangelogRecord],
        next_offset: int,
        *,
        on_update_error: Literal["fail", "skip"] = "fail",
    ) -> int:
        """Write changelog records (value None = tombstone) and the offset reached, atomically.

        ``records`` are ``(key, value)`` pairs or :class:`ChangelogRecord` (which give an update
        callback the record's offset and headers). Returns the number of records applied.
        Records without a key cannot belong to a table and are ignored. If the update callback
        raises, ``on_update_error="fail"`` writes nothing of the batch and raises a
        :class:`~goka_ray.errors.ProcessingError` naming the record; ``"skip"`` logs it and
        leaves that record out (a view keeps serving rather than stop). A
        :class:`~goka_ray.errors.StorageError` of the storage is raised as it is (never as the
        callback's failure).
        """
        batch = WriteBatch()
        writes = batch.writes
        n = 0
        update = self.update
        if update is None:
            for record in records:
                key = record[0]
                if key is None:
                    continue
                writes[key] = record[1]
                n += 1
        else:
            view = UpdateStorage(self.storage, batch)
            for record in records:
                key = record[0]
                if key is None:
                    continue
                offset, headers = -1, None
                if isinstance(record, ChangelogRecord):
                    offset, headers = record.offset, record.headers
                text = decode_key(key)
                ctx = UpdateContext(self.topic, self.partition, offset, headers_dict(headers))
                try:
                    update(ctx, view, text, record[1])
                except StorageError:
                    raise  # the storage is damaged: not the callback's failure
                except Exception as exc:
                    if on_update_error == "fail":
                        raise ProcessingError(
                            self.group, self.topic, self.partition, offset, text, exc
                        ) from exc
                    logger.exception(
                        "update callback failed on %s[%d]@%d key %r; record not stored",
                        self.topic,
                        self.partition,
                        offset,
                        text,
                    )
                    continue
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
