"""The table copies an in-process view reads: one dict for the whole table, or LevelDB.

A :class:`~goka_ray.kafka.local_view.LocalView` keeps every partition of a table in the
reading process. Its follower thread writes one storage per partition (what
:class:`~goka_ray.kafka.changelog.ChangelogFollower` feeds); readers on other threads read
through the copies here:

- :class:`MemoryCopies`: every partition's pairs also live in one dict of the whole table, so
  a read is one dict lookup, with no partitioner hash (murmur2 in Python costs about
  3 microseconds per key). Each partition's :class:`PartitionSlice` keeps its own pairs and
  offset (the follower's bookkeeping: offsets, counts, reloads) and mirrors its writes into
  the table dict.
- :class:`LevelDBCopies`: one LevelDB store per partition in a directory of this view's own
  (for tables larger than memory); a read hashes the key to its partition, as Goka's view
  (``get_many`` hashes all its keys at once, :func:`~goka_ray.core.partitioner.murmur2_many`).

Invariants:

- Only the follower thread writes; every write, and the switch to a reloaded copy, happens
  under the view's lock, so a reader holding the lock never sees half a batch or a closed
  store.
- A reload (the changelog was recreated) is built aside in a fresh storage that readers do not
  see; the follower serves it by closing the old one (``_finish_reload``), and that close
  puts the fresh copy in place atomically (:meth:`PartitionSlice.close`).
- The copies are caches of the changelog: nothing here survives :meth:`close` (LevelDB
  directories are deleted), and a view rebuilds them at every start.
"""

from __future__ import annotations

import heapq
import itertools
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from operator import itemgetter
from pathlib import Path

from goka_ray.core.key_index import KeyIndex
from goka_ray.core.partitioner import Partitioner, partitions_of
from goka_ray.core.storage import LevelDBStorage, Storage, WriteBatch
from goka_ray.core.tables import TablePartition

__all__ = ["LevelDBCopies", "MemoryCopies", "PartitionSlice", "ViewCopies"]


class ViewCopies:
    """What a view reads: values by key bytes, ordered pages, the key count."""

    def __init__(self, lock: threading.RLock) -> None:
        self.lock = lock
        #: the served table partitions, by partition number (set by the view)
        self.tables: dict[int, TablePartition] = {}

    def storage(self, partition: int) -> Storage:
        """A new, empty storage for ``partition`` (its first copy)."""
        raise NotImplementedError

    def fresh(self, table: TablePartition) -> Storage:
        """A new storage a reload of ``table`` is built in, aside."""
        raise NotImplementedError

    def get(self, key: bytes) -> bytes | None:
        raise NotImplementedError

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        raise NotImplementedError

    def page(self, start: bytes | None, end: bytes | None, limit: int) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` pairs with start <= key < end, in key-byte order (hold the lock)."""
        raise NotImplementedError

    def count(self) -> int:
        return sum(len(t) for t in self.tables.values())

    def close(self) -> None:
        for table in self.tables.values():
            table.storage.close()


# -- in memory ------------------------------------------------------------------------------


class MemoryCopies(ViewCopies):
    """All partitions in one dict (``values``), each also in its :class:`PartitionSlice`."""

    def __init__(self, lock: threading.RLock) -> None:
        super().__init__(lock)
        #: every served pair of the table; a read is ``values.get(key)``
        self.values: dict[bytes, bytes] = {}
        self.index = KeyIndex()

    def storage(self, partition: int) -> Storage:
        return PartitionSlice(self, served=True)

    def fresh(self, table: TablePartition) -> Storage:
        old = table.storage
        assert isinstance(old, PartitionSlice)
        fresh = PartitionSlice(self, served=False)
        old.successor = fresh
        return fresh

    def get(self, key: bytes) -> bytes | None:
        return self.values.get(key)  # one dict read: atomic, no lock needed

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        get = self.values.get
        with self.lock:
            return [get(k) for k in keys]

    def iterate(self) -> Iterator[tuple[bytes, bytes]]:
        """Every pair in key order (the index rebuilds from it; hold the lock)."""
        return iter(sorted(self.values.items()))

    def page(self, start: bytes | None, end: bytes | None, limit: int) -> list[tuple[bytes, bytes]]:
        return list(self.index.page(self, start, end, limit))

    def count(self) -> int:
        return len(self.values)


class PartitionSlice:
    """One partition of a :class:`MemoryCopies`: a :class:`~goka_ray.core.storage.Storage`
    the follower writes. A served slice mirrors its writes into the table dict; a slice being
    reloaded aside does not, until the served one it replaces is closed."""

    def __init__(self, copies: MemoryCopies, *, served: bool) -> None:
        self._copies = copies
        self._data: dict[bytes, bytes] = {}
        self._offset: int | None = None
        self.served = served
        #: the reload built aside to replace this slice when it is closed
        self.successor: PartitionSlice | None = None

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def has(self, key: bytes) -> bool:
        return key in self._data

    def set(self, key: bytes, value: bytes) -> None:
        batch = WriteBatch()
        batch.set(key, value)
        self.write(batch)

    def delete(self, key: bytes) -> None:
        batch = WriteBatch()
        batch.delete(key)
        self.write(batch)

    @contextmanager
    def batch(self) -> Iterator[WriteBatch]:
        batch = WriteBatch()
        yield batch
        self.write(batch)

    def iterate(
        self, start: bytes | None = None, end: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        with self._copies.lock:
            pairs = sorted(self._data.items())  # a snapshot, as a LevelDB iterator
        for key, value in pairs:
            if start is not None and key < start:
                continue
            if end is not None and key >= end:
                break
            yield key, value

    def write(self, batch: WriteBatch) -> None:
        copies = self._copies
        data = self._data
        with copies.lock:
            if self.served:
                values, note = copies.values, copies.index.note
                for key, value in batch.writes.items():
                    existed = key in values
                    if value is None:
                        data.pop(key, None)
                        values.pop(key, None)
                    else:
                        data[key] = values[key] = value
                    note(key, existed, value is not None)
            else:
                for key, value in batch.writes.items():
                    if value is None:
                        data.pop(key, None)
                    else:
                        data[key] = value
            if batch.offset is not None:
                self._offset = batch.offset

    def offset(self) -> int | None:
        return self._offset

    def key_count(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        with self._copies.lock:
            if self.served:
                self._withdraw()
            self._data = {}
            self._offset = None

    def _withdraw(self) -> None:
        values = self._copies.values
        for key in self._data:
            values.pop(key, None)
        self._copies.index.invalidate()

    def close(self) -> None:
        """Stop serving this slice; if a reload replaces it, serve the reload instead (the
        follower closes the old copy right after it switched to the fresh one)."""
        with self._copies.lock:
            fresh, self.successor = self.successor, None
            if not self.served:
                return
            self.served = False
            if fresh is None:
                return  # the view is closing: the table dict goes with it
            # new values first, then the keys the reload no longer has: a reader without
            # the lock sees a key's old or new value, never a gap
            values = self._copies.values
            values.update(fresh._data)
            for key in self._data:
                if key not in fresh._data:
                    values.pop(key, None)
            self._copies.index.invalidate()
            fresh.served = True


# -- in LevelDB -----------------------------------------------------------------------------


class LevelDBCopies(ViewCopies):
    """One LevelDB store per partition under a directory of its own inside ``storage_dir``
    (deleted on :meth:`close`); reads hash the key to its partition."""

    def __init__(
        self,
        lock: threading.RLock,
        storage_dir: str | Path,
        table: str,
        partitions: int,
        partitioner: Partitioner,
    ) -> None:
        super().__init__(lock)
        Path(storage_dir).mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=f"{table}-view-", dir=storage_dir))
        self.partitions = partitions
        self.partitioner = partitioner
        self._generation = itertools.count()

    def _open(self, partition: int) -> Storage:
        path = self.path / f"{partition}.{next(self._generation)}"
        return _LevelDBCopy(path, self.lock)

    def storage(self, partition: int) -> Storage:
        return self._open(partition)

    def fresh(self, table: TablePartition) -> Storage:
        return self._open(table.partition)

    def get(self, key: bytes) -> bytes | None:
        p = self.partitioner.partition(key, self.partitions)
        with self.lock:
            return self.tables[p].storage.get(key)

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        tables = self.tables
        where = partitions_of(self.partitioner, keys, self.partitions)
        with self.lock:
            return [tables[p].storage.get(k) for p, k in zip(where, keys, strict=True)]

    def page(self, start: bytes | None, end: bytes | None, limit: int) -> list[tuple[bytes, bytes]]:
        runs = [t.storage.iterate(start, end) for t in self.tables.values()]
        merged = heapq.merge(*runs, key=itemgetter(0))
        return list(itertools.islice(merged, limit))

    def close(self) -> None:
        super().close()
        shutil.rmtree(self.path, ignore_errors=True)


class _LevelDBCopy(LevelDBStorage):
    """A partition's LevelDB copy: closed under the view's lock (no reader is inside it),
    and deleted when closed (a cache, rebuilt from the changelog at every start)."""

    def __init__(self, path: Path, lock: threading.RLock) -> None:
        self._lock = lock
        super().__init__(path)

    def close(self) -> None:
        with self._lock:
            super().close()
        shutil.rmtree(self.path, ignore_errors=True)
