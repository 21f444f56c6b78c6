"""Table storage: one key-value store per table partition, plus the changelog offset.

Invariants of a LevelDB copy (:class:`LevelDBStorage`):

- **Atomic**: every :meth:`~LevelDBStorage.write` is one LevelDB write batch holding the data,
  the changelog offset it reaches, the key count and a digest of every stored pair (a sum of
  per-pair CRC32s), so a reopened store is exactly as of one of its applied batches. Losing
  the tail of LevelDB's newest log (a crash) loses whole batches, never half of one: the
  store is older, still consistent, and its offset says where to read the changelog on from.
- **Whole**: a copy is used only if every check at open passes: LevelDB opens it *without*
  creating anything (``create_if_missing`` only for an absent or empty directory, with
  ``error_if_exists``), with ``paranoid_checks`` (MANIFEST and log readable, no table file
  missing); every table file has the size the MANIFEST records; the generation id written
  into the database when it was created equals the one in the file beside it
  (:data:`GENERATION_FILE`; a copy missing either side, or pairing another store's files
  with this file, is damaged); and either the copy was closed cleanly and LevelDB's files
  are exactly as that close recorded them (:data:`CLEAN_CLOSE_FILE`, removed at every open,
  so a crash leaves none: Kafka Streams' ``.checkpoint`` plays this part), or a scan of
  every pair, checksums verified, adds up to the stored key count and digest (a copy that
  lost or reverted writes, e.g. through a damaged older log, does not). A copy that fails
  is :class:`~goka_ray.errors.LocalCopyDamaged`.
- **Checked reads**: every read verifies LevelDB's block checksums; any LevelDB error of an
  open store (corruption, I/O error) is raised as ``LocalCopyDamaged`` naming the path,
  never as a plyvel exception and never as "key absent". A copy that raised it once takes
  no more writes and its close is not recorded as clean.
- **One opener**: LevelDB's ``LOCK`` file admits one opener per directory; a second one gets
  :class:`~goka_ray.errors.StorageLocked` (not damage: nothing is wrong with the copy).

What to do about a damaged copy is not decided here: the Kafka layer's local-copy rules
(``goka_ray.kafka.local_copy``) move it aside and rebuild it from the changelog.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
import zlib
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, NoReturn, Protocol

from goka_ray.errors import LocalCopyDamaged, StorageError, StorageLocked

__all__ = [
    "CLEAN_CLOSE_FILE",
    "GENERATION_FILE",
    "LevelDBStorage",
    "MemoryStorage",
    "Storage",
    "WriteBatch",
    "node_storage_dir",
    "partition_dir",
]

logger = logging.getLogger(__name__)


class WriteBatch:
    """Writes collected to be applied atomically; later writes to a key replace earlier ones.

    ``known`` may hold what the store holds now for some of the written keys (None: absent),
    as the writer read them since the store's last write; a store that needs a key's old
    value (LevelDB's digest) takes it from there instead of reading it again. Only a writer
    that is the store's sole writer may fill it.
    """

    __slots__ = ("known", "offset", "writes")

    def __init__(self) -> None:
        self.writes: dict[bytes, bytes | None] = {}
        self.offset: int | None = None
        self.known: Mapping[bytes, bytes | None] | None = None

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
_META_DIGEST = b"m:digest"
_META_GENERATION = b"m:generation"
_DIGEST_MASK = (1 << 64) - 1

#: file beside a LevelDB copy's data naming the generation written into the database
GENERATION_FILE = "GOKA-RAY-GENERATION"
#: file written when a copy is closed cleanly: its generation and LevelDB's files with
#: their sizes; removed when the copy is opened, so it is absent after a crash
CLEAN_CLOSE_FILE = "GOKA-RAY-CLEAN-CLOSE"
#: a table file in LevelDB's ``leveldb.sstables`` property: `` <number>:<size>[...]``
_SSTABLE_LINE = re.compile(r"^\s*(\d+):(\d+)\[", re.MULTILINE)
#: LevelDB's own files that hold data (not LOCK, not its info LOG)
_LEVELDB_FILE = re.compile(r"^(CURRENT|MANIFEST-\d+|\d+\.(log|ldb|sst))$")


def partition_dir(base: str | Path, group: str, table: str, partition: int) -> Path:
    """Directory of one table partition's LevelDB: ``<base>/<group>/<table>/<partition>``."""
    return Path(base) / group / table / f"{partition:04d}"


def node_storage_dir(storage_dir: str | Path, node_id: str, hostname: str | None = None) -> Path:
    """Where the local copies of one Ray node live: ``storage_dir`` keyed by the node.

    ``storage_dir`` may name the node itself with ``{node_id}`` (Ray's node id, hex) or
    ``{hostname}`` (e.g. ``/var/lib/goka-ray/{hostname}``, which keeps copies across restarts
    of Ray on a host with its own disk, if every host runs one Ray node); without either,
    the node id is appended: ``<storage_dir>/<node id>``. Two Ray nodes sharing a disk (one
    machine, or a mounted home directory) then never open the same LevelDB directory.
    """
    text = str(storage_dir)
    if "{node_id}" in text or "{hostname}" in text:
        return Path(
            text.replace("{node_id}", node_id).replace("{hostname}", hostname or os.uname()[1])
        )
    return Path(text) / node_id


def _plyvel() -> Any:
    import plyvel

    return plyvel


def _reason(exc: BaseException) -> str:
    """The text of a plyvel error (plyvel passes LevelDB's status as bytes)."""
    arg = exc.args[0] if exc.args else exc
    if isinstance(arg, bytes):
        return arg.decode("utf-8", "replace")
    return str(arg)


#: a key whose old value the writer does not know (see WriteBatch.known)
_UNKNOWN: Any = object()


def _pair_hash(key: bytes, value: bytes) -> int:
    """The contribution of one stored pair to a store's digest (a sum of these, mod 2**64)."""
    return zlib.crc32(value, zlib.crc32(key, len(key)))


class LevelDBStorage(_BatchMixin):
    """LevelDB through plyvel; data keys and metadata live in separate key prefixes.

    Opening an absent or empty ``path`` creates a new store (a new generation); opening
    anything else checks that it is a whole copy (module docstring): cheaply after a clean
    close, with a scan of every pair against the stored key count and digest otherwise.
    Raises :class:`~goka_ray.errors.LocalCopyDamaged` if it is not whole, or if LevelDB
    reports corruption or an I/O error later; :class:`~goka_ray.errors.StorageLocked` if
    another opener holds it; :class:`~goka_ray.errors.StorageError` if the directory cannot
    be created.
    """

    def __init__(self, path: str | Path, *, write_buffer_size: int = 16 << 20) -> None:
        self.path = Path(path)
        self._write_buffer_size = write_buffer_size
        self._errors: type[Exception] = _plyvel().Error
        #: the id written into the database when it was created, also in GENERATION_FILE
        self.generation = ""
        #: how the last open verified the copy: "created", "clean" (closed cleanly and
        #: untouched since) or "scanned" (every pair read against the key count and digest)
        self.opened = ""
        #: set once this copy raised LocalCopyDamaged: it takes no more writes, and its
        #: close is not recorded as clean
        self._failure: str | None = None
        self._open()

    # -- opening ----------------------------------------------------------------------------

    def _open(self) -> None:
        if _absent_or_empty(self.path):
            self._db = self._create()
            self.opened = "created"
        else:
            self._db = self._open_existing()
        self._data = self._db.prefixed_db(_DATA)
        self._failure = None

    def _leveldb(self, **options: Any) -> Any:
        plyvel = _plyvel()
        try:
            return plyvel.DB(
                str(self.path),
                paranoid_checks=True,
                write_buffer_size=self._write_buffer_size,
                **options,
            )
        except plyvel.IOError as exc:
            if "lock" in _reason(exc).lower():
                raise StorageLocked(
                    f"cannot open LevelDB at {self.path}: {_reason(exc)}. Another process (or "
                    f"another storage object in this one) has it open: close it first, or "
                    f"use another directory"
                ) from exc
            self._damaged("LevelDB cannot open it", exc)
        except plyvel.Error as exc:
            self._damaged("LevelDB cannot open it", exc)

    def _create(self) -> Any:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create the LevelDB directory {self.path}: {exc}. Is storage_dir writable?"
            ) from exc
        db = self._leveldb(create_if_missing=True, error_if_exists=True)
        generation = uuid.uuid4().hex
        try:
            db.put(_META_GENERATION, generation.encode(), sync=True)
            _write_file(self.path / GENERATION_FILE, generation)
        except (OSError, self._errors) as exc:
            db.close()
            raise StorageError(f"cannot create a LevelDB store at {self.path}: {exc}") from exc
        self.generation = generation
        self._count = self._digest = 0
        return db

    def _open_existing(self) -> Any:
        if not self.path.is_dir():
            self._damaged("it is a file, not a LevelDB directory")
        clean = self._closed_cleanly()
        db = self._leveldb(create_if_missing=False)
        try:
            problem = self._check(db)
            if problem is None and not clean:
                problem = self._scan(db)
        except self._errors as exc:
            db.close()
            self._damaged("verifying it", exc)
        if problem is not None:
            db.close()
            self._damaged(problem)
        self.opened = "clean" if clean else "scanned"
        return db

    def _closed_cleanly(self) -> bool:
        """Whether the copy was closed cleanly and LevelDB's files are as it left them.

        Consumes the clean-close record: a crash from now on leaves none behind.
        """
        record = self.path / CLEAN_CLOSE_FILE
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            return False
        try:
            record.unlink()
        except OSError as exc:
            raise StorageError(f"cannot write to the LevelDB directory {self.path}: {exc}") from exc
        try:
            marked = (self.path / GENERATION_FILE).read_text().strip()
        except OSError:
            return False
        return bool(
            isinstance(data, dict)
            and data.get("generation") == marked
            and data.get("files") == _leveldb_files(self.path)
        )

    def _check(self, db: Any) -> str | None:
        """What makes an opened store not whole, or None (checks that need no scan)."""
        listed = db.get_property(b"leveldb.sstables") or b""
        for number, size in _SSTABLE_LINE.findall(listed.decode("utf-8", "replace")):
            name = _table_file(self.path, int(number))
            actual = name.stat().st_size if name.exists() else -1
            if actual != int(size):
                return (
                    f"table file {name.name} has {actual} bytes where LevelDB's MANIFEST "
                    f"records {size} (truncated or replaced)"
                )
        stored = db.get(_META_GENERATION, verify_checksums=True)
        try:
            marked: str | None = (self.path / GENERATION_FILE).read_text().strip()
        except OSError:
            marked = None
        if stored is None and marked is None:
            return (
                f"neither the database nor {GENERATION_FILE} holds a generation id (the "
                f"database lost the files it was created with, or an older goka-ray wrote it)"
            )
        if stored is None:
            return (
                f"the database holds no generation id but {GENERATION_FILE} names {marked}: it "
                f"lost the files it was created with"
            )
        if marked is None:
            return f"{GENERATION_FILE} is missing (the database is generation {stored.decode()})"
        if stored.decode() != marked:
            return (
                f"the database is generation {stored.decode()} but {GENERATION_FILE} names "
                f"{marked}: these files belong to another store"
            )
        self.generation = marked
        raw_count = db.get(_META_COUNT, verify_checksums=True)
        raw_digest = db.get(_META_DIGEST, verify_checksums=True)
        self._count = int(raw_count) if raw_count is not None else 0
        self._digest = int(raw_digest) if raw_digest is not None else 0
        return None

    def _scan(self, db: Any) -> str | None:
        """Read every pair (checksums verified) against the stored key count and digest."""
        count = digest = 0
        with db.prefixed_db(_DATA).iterator(verify_checksums=True, fill_cache=False) as it:
            for key, value in it:
                count += 1
                digest += _pair_hash(key, value)
        digest &= _DIGEST_MASK
        if count != self._count or digest != self._digest:
            return (
                f"it was not closed cleanly, and its {count} keys do not add up to the "
                f"{self._count} keys and the digest its last write recorded: it lost or "
                f"reverted writes (a damaged or missing log or table file)"
            )
        return None

    def _damaged(self, doing: str, exc: BaseException | None = None) -> NoReturn:
        reason = doing if exc is None else f"{doing}: {_reason(exc)}"
        self._failure = reason
        raise LocalCopyDamaged(str(self.path), reason) from exc

    def reopen(self) -> None:
        """Close and open the directory again; a new store if the directory is gone.

        The local-copy rules call this after moving a damaged copy aside.
        """
        self.close()
        self.generation = ""
        self._open()

    # -- reading and writing ----------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        try:
            value: bytes | None = self._data.get(key, verify_checksums=True)
        except self._errors as exc:
            self._damaged("reading a key", exc)
        return value

    def has(self, key: bytes) -> bool:
        return self.get(key) is not None

    def iterate(
        self, start: bytes | None = None, end: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        try:
            with self._data.iterator(start=start, stop=end, verify_checksums=True) as it:
                yield from it
        except self._errors as exc:
            self._damaged("iterating over keys", exc)

    def write(self, batch: WriteBatch) -> None:
        if self._failure is not None:
            raise LocalCopyDamaged(
                str(self.path),
                f"it takes no more writes after an earlier error ({self._failure})",
            )
        count, digest = self._count, self._digest
        get = self._data.get
        known = batch.known or {}
        try:
            with self._db.write_batch(transaction=True) as wb:
                for key, value in batch.writes.items():
                    old = known.get(key, _UNKNOWN)
                    if old is _UNKNOWN:
                        old = get(key, verify_checksums=True)
                    full = _DATA + key
                    if old is not None:
                        digest -= _pair_hash(key, old)
                        count -= 1
                    if value is None:
                        if old is not None:
                            wb.delete(full)
                    else:
                        wb.put(full, value)
                        digest += _pair_hash(key, value)
                        count += 1
                digest &= _DIGEST_MASK
                if batch.offset is not None:
                    wb.put(_META_OFFSET, str(batch.offset).encode())
                wb.put(_META_COUNT, str(count).encode())
                wb.put(_META_DIGEST, str(digest).encode())
        except self._errors as exc:
            self._damaged("writing a batch", exc)
        self._count, self._digest = count, digest

    def offset(self) -> int | None:
        try:
            raw = self._db.get(_META_OFFSET, verify_checksums=True)
        except self._errors as exc:
            self._damaged("reading its changelog offset", exc)
        return int(raw) if raw is not None else None

    def key_count(self) -> int:
        return self._count

    def clear(self) -> None:
        """Remove every key and the offset (the generation stays: it is the same store)."""
        try:
            with self._db.write_batch(transaction=True) as wb:
                for key in self._db.iterator(include_value=False, verify_checksums=True):
                    if key != _META_GENERATION:
                        wb.delete(key)
        except self._errors as exc:
            self._damaged("clearing it", exc)
        self._count = self._digest = 0

    # -- closing ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database; if no error was seen, record the clean close beside it."""
        db = getattr(self, "_db", None)
        if db is None or db.closed:
            return
        db.close()
        if self._failure is None and self.generation:
            try:
                record = {"generation": self.generation, "files": _leveldb_files(self.path)}
                _write_file(self.path / CLEAN_CLOSE_FILE, json.dumps(record))
            except OSError:  # the next open then verifies the copy by a scan
                logger.warning("cannot record the clean close of %s", self.path, exc_info=True)

    def destroy(self) -> None:
        """Close and delete the whole directory (the changelog is the source of truth)."""
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the next open verifies the copy by a scan
            pass


def _absent_or_empty(path: Path) -> bool:
    try:
        with os.scandir(path) as entries:
            return next(entries, None) is None
    except FileNotFoundError:
        return True
    except NotADirectoryError:
        return False
    except OSError as exc:
        raise StorageError(f"cannot read the LevelDB directory {path}: {exc}") from exc


def _leveldb_files(path: Path) -> dict[str, int]:
    """LevelDB's data files in ``path`` with their sizes in bytes."""
    files = {}
    with os.scandir(path) as entries:
        for entry in entries:
            if _LEVELDB_FILE.match(entry.name):
                files[entry.name] = entry.stat().st_size
    return files


def _table_file(path: Path, number: int) -> Path:
    ldb = path / f"{number:06d}.ldb"
    if ldb.exists():
        return ldb
    sst = path / f"{number:06d}.sst"
    return sst if sst.exists() else ldb


def _write_file(target: Path, text: str) -> None:
    """Write ``target`` atomically and durably (temporary file, fsync, rename)."""
    temporary = target.with_name(target.name + ".tmp")
    with open(temporary, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, target)


def read_all(storage: Storage) -> Mapping[bytes, bytes]:
    """Every pair of a storage as a dict (for tests and small tables)."""
    return dict(storage.iterate())
