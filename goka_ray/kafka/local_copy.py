"""Local copies of tables: caches of their changelogs, checked, discarded and rebuilt.

A partition runner keeps a LevelDB copy of its table, of each joined table and of every
partition of each lookup table. Invariants:

- **The changelog is the source of truth.** A local copy is a cache; it is never repaired
  (LevelDB's ``repair_db`` keeps what it can read and silently drops the rest). A copy that
  is damaged or does not belong to its changelog is discarded and rebuilt from the
  changelog's beginning, as Kafka Streams wipes and restores a corrupted state store.
- **Whole, as a LevelDB store**: the checks of :mod:`goka_ray.core.storage` at every open
  (no store silently created over old files, MANIFEST, log and table files, generation id,
  clean close or a scan against the key count and digest), and LevelDB's checksums on every
  read afterwards. Any failure is :class:`~goka_ray.errors.LocalCopyDamaged`.
- **Whole, against its changelog** (:meth:`LocalCopies.check_against_changelog`, at the
  first recovery): the identity file (:data:`IDENTITY_FILE`) names the changelog topic,
  partition and topic id the copy was built from, and the stored offset is not beyond the
  changelog's end (Goka #396, #415).
- **Discarding** is logged once, at WARNING, with the path and the reason. A damaged copy is
  moved aside to ``<dir>.damaged`` (replacing an older one there: at most one per
  directory, kept for a post-mortem; delete it at will); a copy of another changelog is
  deleted. A new empty copy (a new generation) opens at the same path, so every reference
  to the storage object stays valid.
- **Bounded**: one runner discards the copies it holds at most :data:`MAX_REBUILDS` times;
  past that the fault is not the copy's but the disk's, and :class:`StorageError` fails the
  partition (its coordinator restarts it elsewhere or gives up after ``max_restarts``).
- **One writer**: only the runner that opened a copy writes it (LevelDB's ``LOCK``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from goka_ray.core.storage import LevelDBStorage
from goka_ray.core.tables import TablePartition
from goka_ray.errors import LocalCopyDamaged, StorageError

__all__ = ["DAMAGED_SUFFIX", "IDENTITY_FILE", "MAX_REBUILDS", "LocalCopies"]

logger = logging.getLogger(__name__)

#: file in a LevelDB copy's directory naming the changelog it was built from
IDENTITY_FILE = "goka-ray-changelog.json"
#: suffix of the directory a damaged copy is moved to
DAMAGED_SUFFIX = ".damaged"
#: copies one runner may discard before it gives up (the disk, not the copy, is failing)
MAX_REBUILDS = 5

TopicPartitionKey = tuple[str, int]


class LocalCopies:
    """The LevelDB copies one partition runner holds: opened whole, or discarded and new.

    ``group`` and ``partition`` name the runner in log messages. Not thread-safe: used by the
    runner's processing thread only.
    """

    def __init__(self, group: str, partition: int) -> None:
        self.group = group
        self.partition = partition
        self.storages: list[LevelDBStorage] = []
        #: copies discarded by this runner (damaged, or not of their changelog)
        self.discarded = 0
        self._rebuilds = 0

    def open(self, path: Path) -> LevelDBStorage:
        """Open the copy at ``path``; a damaged one is moved aside and a new one created.

        Raises StorageLocked if another opener holds it, StorageError if no copy can be
        created there.
        """
        try:
            storage = LevelDBStorage(path)
        except LocalCopyDamaged as exc:
            self._count_rebuild(exc)
            self._warn(exc.path, exc.reason, "moving it aside to " + _aside(path).name)
            _move_aside(path)
            storage = LevelDBStorage(path)
        self.storages.append(storage)
        return storage

    def owner(self, damage: LocalCopyDamaged) -> LevelDBStorage:
        """The copy ``damage`` is about (the error is raised again if it is none of ours)."""
        for storage in self.storages:
            if str(storage.path) == damage.path:
                return storage
        raise damage

    def discard_damaged(self, damage: LocalCopyDamaged) -> LevelDBStorage:
        """Move the damaged copy aside and open a new empty one in its place.

        Returns the storage object (the same one: references to it stay valid), now empty
        with no offset: read its changelog from the beginning into it. Raises StorageError
        past MAX_REBUILDS.
        """
        storage = self.owner(damage)
        self._count_rebuild(damage)
        self._warn(damage.path, damage.reason, "moving it aside to " + _aside(storage.path).name)
        storage.close()
        _move_aside(storage.path)
        storage.reopen()
        return storage

    def check_against_changelog(
        self,
        tables: Mapping[TopicPartitionKey, TablePartition],
        topic_ids: Mapping[str, str],
        ends: Mapping[TopicPartitionKey, int],
    ) -> None:
        """Discard copies that do not belong to their changelog any more; record identities.

        ``topic_ids`` is the broker's id of each changelog topic (missing where the broker
        reports none), ``ends`` the end offset of each changelog partition a copy has an
        offset for. A copy is stale when it was built from another topic id (the topic was
        deleted and re-created, or the directory comes from another cluster), from another
        topic or partition, or when its offset lies beyond the changelog's end. Reading on
        from a stale offset would keep old values or skip new records, so the copy is
        deleted and rebuilt from the changelog.
        """
        for tp, table in tables.items():
            storage = table.storage
            if not isinstance(storage, LevelDBStorage):
                continue
            path = storage.path
            identity = _read_identity(path)
            topic_id = topic_ids.get(tp[0])
            offset = storage.offset()
            why = _mismatch(tp, identity, topic_id, offset, ends.get(tp))
            if why is not None:
                self._warn(
                    str(path),
                    f"it does not match its changelog: {why}",
                    f"Discarding the local copy ({len(table)} keys)",
                )
                self.discarded += 1
                storage.close()
                shutil.rmtree(path, ignore_errors=True)
                storage.reopen()
                identity = {}
            if topic_id is not None and identity.get("topic_id") != topic_id:
                _write_identity(path, {"topic": tp[0], "partition": tp[1], "topic_id": topic_id})

    def close(self) -> None:
        for storage in self.storages:
            storage.close()

    def _count_rebuild(self, damage: LocalCopyDamaged) -> None:
        self._rebuilds += 1
        self.discarded += 1
        if self._rebuilds > MAX_REBUILDS:
            raise StorageError(
                f"group {self.group} partition {self.partition}: {self._rebuilds} local copies "
                f"were damaged, the last at {damage.path} ({damage.reason}). The disk under "
                f"the storage directory is failing or full: check it, or move storage_dir"
            ) from damage

    def _warn(self, path: str, reason: str, action: str) -> None:
        logger.warning(
            "group %s partition %d: the local copy in %s is not usable: %s. %s and rebuilding "
            "it from the changelog.",
            self.group,
            self.partition,
            path,
            reason,
            action,
        )


def _mismatch(
    tp: TopicPartitionKey,
    identity: Mapping[str, Any],
    topic_id: str | None,
    offset: int | None,
    end: int | None,
) -> str | None:
    """Why a copy does not belong to changelog ``tp``, or None."""
    topic, partition = tp
    if identity.get("topic", topic) != topic or identity.get("partition", partition) != partition:
        return (
            f"it was built from {identity.get('topic')}[{identity.get('partition')}], not "
            f"{topic}[{partition}]"
        )
    if identity.get("topic_id") and topic_id and identity["topic_id"] != topic_id:
        return (
            f"it was built from a topic {topic!r} with id {identity['topic_id']}, but the "
            f"broker's topic of that name has id {topic_id} (deleted and re-created, or "
            f"another cluster)"
        )
    if offset is not None and end is not None and offset > end:
        return (
            f"it is at changelog offset {offset}, beyond the end of {topic}[{partition}] at "
            f"{end} (the topic was deleted and re-created, or this directory belongs to "
            f"another cluster)"
        )
    return None


def _aside(path: Path) -> Path:
    return path.with_name(path.name + DAMAGED_SUFFIX)


def _move_aside(path: Path) -> None:
    """Rename ``path`` to ``<path>.damaged``, replacing an older damaged copy there."""
    target = _aside(path)
    try:
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        os.replace(path, target)
    except FileNotFoundError:
        pass  # already gone: nothing to move
    except OSError as exc:
        raise StorageError(
            f"cannot move the damaged local copy {path} aside to {target}: {exc}. Remove it by "
            f"hand; the group rebuilds it from the changelog"
        ) from exc


def _read_identity(path: Path) -> dict[str, Any]:
    """What a local copy records about the changelog it was built from ({} if nothing)."""
    try:
        data = json.loads((path / IDENTITY_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_identity(path: Path, identity: Mapping[str, Any]) -> None:
    target = path / IDENTITY_FILE
    temporary = target.with_suffix(".tmp")
    temporary.write_text(json.dumps(dict(identity)))
    os.replace(temporary, target)
