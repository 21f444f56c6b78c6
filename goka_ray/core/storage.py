"""Table storage: one key-value store per table partition, plus the changelog offset.

The offset is the next changelog offset to read, written in the same atomic batch as the data
it covers, so a reopened storage is exactly as of its last committed batch.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from goka_ray.errors import StorageError

__all__ = ["LevelDBStorage", "MemoryStorage", "Storage", "WriteBatch", "partition_dir"]

logger = logging.getLogger(__name__)


class WriteBatch:
    """Writes collected to be applied atomically; later writes to a key replace earlier ones."""

    __slots__ = ("offset", "writes")

    def __init__(self) -> None:
        self.writes: dict[bytes, bytes | None] = {}
        self.offset: int | None = None

    def set(self, key: bytes, value: bytes) -> None:
        self.writes[key] = value

    def delete(self, key: bytes) -> None:
        self.writes[key] = None

    def set_offset(self, offset: int) -> None:
        self.offset = offset

    def __len__(self) -> int:
        return len(self.writes)


class Storage(Protocol):
    """What a table partition needs from a key-value store."""

    def get(self, key: bytes) -> bytes | None: ...

    def has(self, key: bytes) -> bool: ...

    def set(self, key: bytes, value: bytes) -> None:
        """Store one value (a batch of one write)."""
        ...

    def delete(self, key: bytes) -> None:
        """Remove one key; removing an absent key is not an error."""
        ...

    def iterate(
        self, start: bytes | None = None, end: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Pairs with ``start <= key < end``, sorted by key."""
        ...

    def write(self, batch: WriteBatch) -> None:
        """Apply the batch's writes and offset atomically."""
        ...

    def batch(self) -> AbstractContextManager[WriteBatch]:
        """A WriteBatch applied atomically when the ``with`` block ends without error."""
        ...

    def offset(self) -> int | None:
        """The next changelog offset to read, or None if nothing was ever recovered."""
        ...

    def key_count(self) -> int: ...

    def clear(self) -> None:
        """Remove every key and the offset."""
        ...

    def close(self) -> None: ...


class _BatchMixin:
    def set(self: Storage, key: bytes, value: bytes) -> None:
        b = WriteBatch()
        b.set(key, value)
        self.write(b)

    def delete(self: Storage, key: bytes) -> None:
        b = WriteBatch()
        b.delete(key)
        self.write(b)

    @contextmanager
    def batch(self: Storage) -> Iterator[WriteBatch]:
        """Collect writes in a block; they are applied atomically when it ends without error."""
        b = WriteBatch()
        yield b
        self.write(b)


class MemoryStorage(_BatchMixin):
    """A dict; for the tester, views and tests."""

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._offset: int | None = None

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def has(self, key: bytes) -> bool:
        return key in self._data

    def iterate(
        self, start: bytes | None = None, end: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        # a snapshot, as a LevelDB iterator: writes during the iteration do not disturb it
        for key, value in sorted(self._data.items()):
            if start is not None and key < start:
                continue
            if end is not None and key >= end:
                break
            yield key, value

    def write(self, batch: WriteBatch) -> None:
        for key, value in batch.writes.items():
            if value is None:
                self._data.pop(key, None)
            else:
                self._data[key] = value
        if batch.offset is not None:
            self._offset = batch.offset

    def offset(self) -> int | None:
        return self._offset

    def key_count(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        self._data.clear()
        self._offset = None

    def close(self) -> None:
        pass


_DATA = b"d"
_META_OFFSET = b"m:offset"
_META_COUNT = b"m:count"


def partition_dir(base: str | Path, group: str, table: str, partition: int) -> Path:
    """Directory of one table partition's LevelDB: ``<base>/<group>/<table>/<partition>``."""
    return Path(base) / group / table / f"{partition:04d}"


class LevelDBStorage(_BatchMixin):
    """LevelDB through plyvel; data keys and metadata live in separate key prefixes."""

    def __init__(self, path: str | Path, *, write_buffer_size: int = 16 << 20) -> None:
        import plyvel

        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._db = plyvel.DB(
                str(self.path), create_if_missing=True, write_buffer_size=write_buffer_size
            )
        except Exception as exc:  # plyvel raises IOError subclasses, e.g. when locked
            raise StorageError(
                f"cannot open LevelDB at {self.path}: {exc}. Is another process using this "
                f"partition's storage, or is the directory not writable?"
            ) from exc
        self._data = self._db.prefixed_db(_DATA)
        raw = self._db.get(_META_COUNT)
        self._count = int(raw) if raw is not None else 0

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self._data.get(key)
        return value

    def has(self, key: bytes) -> bool:
        return self._data.get(key) is not None

    def iterate(
        self, start: bytes | None = None, end: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        with self._data.iterator(start=start, stop=end) as it:
            yield from it

    def write(self, batch: WriteBatch) -> None:
        count = self._count
        get = self._data.get
        with self._db.write_batch(transaction=True) as wb:
            for key, value in batch.writes.items():
                existed = get(key) is not None
                full = _DATA + key
                if value is None:
                    if existed:
                        wb.delete(full)
                        count -= 1
                else:
                    wb.put(full, value)
                    if not existed:
                        count += 1
            if batch.offset is not None:
                wb.put(_META_OFFSET, str(batch.offset).encode())
            wb.put(_META_COUNT, str(count).encode())
        self._count = count

    def offset(self) -> int | None:
        raw = self._db.get(_META_OFFSET)
        return int(raw) if raw is not None else None

    def key_count(self) -> int:
        return self._count

    def clear(self) -> None:
        with self._db.write_batch(transaction=True) as wb:
            for key in self._db.iterator(include_value=False):
                wb.delete(key)
        self._count = 0

    def close(self) -> None:
        if not self._db.closed:
            self._db.close()

    def destroy(self) -> None:
        """Close and delete the whole directory (the changelog is the source of truth)."""
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)

    def __del__(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None and not db.closed:
            db.close()


def read_all(storage: Storage) -> Mapping[bytes, bytes]:
    """Every pair of a storage as a dict (for tests and small tables)."""
    return dict(storage.iterate())
