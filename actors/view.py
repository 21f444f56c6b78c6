"""ViewActor: serves reads of some partitions of a table, kept current from its changelog.

A :class:`~goka_ray.kafka.changelog.ChangelogFollower` thread owns the consumer (Kafka polls
block) and writes the copies; reads are answered from the in-memory copies on other threads,
under one lock. Values stay encoded: the View handle decodes them, so the actor needs no codec.
After a restart the actor rebuilds its copy from the changelog (it is only a cache).

States (``ViewStatus.STATES``) are the follower's: ``connecting`` until the broker answers,
``recovering`` while reading to the end of the changelog, ``running`` once caught up. When the
broker is lost (or the reader fails), the actor goes back to ``connecting``, keeps serving its
copy, and reconnects with exponential backoff (0.5 s doubling to 10 s), resuming from the
offsets it applied last. A changelog that was recreated or truncated is reloaded from the
beginning into a fresh copy; the old copy is served until the new one has caught up. An
update callback that raises skips its record (logged): a view keeps serving.
"""

from __future__ import annotations

import heapq
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import ray

from goka_ray.actors.collector import settle_collector
from goka_ray.core.codecs import Bytes
from goka_ray.core.key_index import KeyIndex
from goka_ray.core.storage import MemoryStorage, Storage, WriteBatch
from goka_ray.core.tables import TablePartition, UpdateCallback
from goka_ray.core.views import ViewStatus
from goka_ray.kafka.changelog import ChangelogFollower

logger = logging.getLogger(__name__)

PAGE_LIMIT = 1000  # default pairs per page of items
PAGE_BYTES = 4 << 20  # a page stops growing once its keys and values reach this size


@dataclass(frozen=True)
class ViewSpec:
    """What a view actor follows: the table topic and how to reach it."""

    brokers: str
    table: str
    consumer_config: dict[str, Any]
    #: ``update(ctx, storage, key, value)`` instead of the default store/delete of a record
    update: UpdateCallback | None = None


class ServedCopy:
    """A storage a view serves: its writes keep a :class:`KeyIndex` current, under the view's
    lock, so readers on other threads never see half a batch."""

    def __init__(self, lock: threading.RLock, inner: Storage | None = None) -> None:
        self.inner: Storage = inner if inner is not None else MemoryStorage()
        self.index = KeyIndex()
        self._lock = lock

    def get(self, key: bytes) -> bytes | None:
        return self.inner.get(key)

    def has(self, key: bytes) -> bool:
        return self.inner.has(key)

    def set(self, key: bytes, value: bytes) -> None:
        batch = WriteBatch()
        batch.set(key, value)
        self.write(batch)

    def delete(self, key: bytes) -> None:
        batch = WriteBatch()
        batch.delete(key)
        self.write(batch)

    def iterate(
        self, start: bytes | None = None, end: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        return self.inner.iterate(start, end)

    def write(self, batch: WriteBatch) -> None:
        with self._lock:
            inner, index = self.inner, self.index
            for key, value in batch.writes.items():
                index.note(key, inner.has(key), value is not None)
            inner.write(batch)

    @contextmanager
    def batch(self) -> Iterator[WriteBatch]:
        batch = WriteBatch()
        yield batch
        self.write(batch)

    def offset(self) -> int | None:
        return self.inner.offset()

    def key_count(self) -> int:
        return self.inner.key_count()

    def clear(self) -> None:
        with self._lock:
            self.inner.clear()
            self.index.invalidate()

    def close(self) -> None:
        self.inner.close()

    def page(
        self, start: bytes | None, end: bytes | None, limit: int
    ) -> Iterator[tuple[bytes, bytes]]:
        """Up to ``limit`` pairs with start <= key < end, in key order (hold the lock)."""
        return self.index.page(self.inner, start, end, limit)


class ViewActor:
    """Keeps ``partitions`` of ``spec.table`` current and answers get/page/count/status."""

    def __init__(self, spec: ViewSpec, partitions: list[int], name: str) -> None:
        self.spec = spec
        self.name = name
        self.partitions = list(partitions)
        self._lock = threading.RLock()
        self._tables = {
            p: TablePartition(spec.table, p, ServedCopy(self._lock), Bytes(), update=spec.update)
            for p in partitions
        }
        self._follower = ChangelogFollower(
            spec.brokers,
            group_id=f"goka-ray-view-{name}",
            consumer_config=spec.consumer_config,
            on_update_error="skip",
            fresh_storage=lambda _table: ServedCopy(self._lock),
            name=f"view {name}",
        )
        for table in self._tables.values():
            self._follower.add(table)
        self._stop = threading.Event()
        self._node_id = ray.get_runtime_context().get_node_id()
        self._thread = threading.Thread(target=self._follow, daemon=True, name="view")
        settle_collector()
        self._thread.start()

    def _follow(self) -> None:
        try:
            self._follower.follow(self._stop)
        except BaseException:
            logger.exception("view %s: changelog reader died; exiting so Ray restarts it", self)
            os._exit(1)
        finally:
            self._follower.close()

    def _copy(self, p: int) -> ServedCopy:
        storage = self._tables[p].storage
        assert isinstance(storage, ServedCopy)
        return storage

    def __repr__(self) -> str:
        return f"ViewActor({self.name!r})"

    # -- reads (batched: one call serves many keys) -------------------------------------------

    def get(self, partition_keys: list[tuple[int, bytes]]) -> list[bytes | None]:
        """The encoded values of (partition, key) pairs, None where absent."""
        with self._lock:
            return [self._tables[p].storage.get(k) for p, k in partition_keys]

    def page(
        self,
        start: bytes | None = None,
        end: bytes | None = None,
        limit: int = PAGE_LIMIT,
        max_bytes: int = PAGE_BYTES,
    ) -> tuple[list[tuple[bytes, bytes]], bool]:
        """The first pairs of this actor's partitions with start <= key < end, sorted by key.

        At most ``limit`` pairs (and not much more than ``max_bytes``, but at least one).
        Returns (pairs, more): ``more`` is False when no pair after the last one is in range.
        Continue with ``start = last_key + b"\\x00"``, the least key after ``last_key``.
        """
        limit = max(1, limit)
        out: list[tuple[bytes, bytes]] = []
        size = 0
        with self._lock:
            runs = [self._copy(p).page(start, end, limit + 1) for p in self.partitions]
            for key, value in heapq.merge(*runs, key=lambda kv: kv[0]):
                if len(out) >= limit or (out and size >= max_bytes):
                    return out, True
                out.append((key, value))
                size += len(key) + len(value)
        return out, False

    def count(self) -> int:
        """The number of keys this actor serves."""
        with self._lock:
            return sum(len(t) for t in self._tables.values())

    def status(self) -> ViewStatus:
        follower = self._follower
        topic = self.spec.table
        offsets = {p: o for (_, p), o in follower.offsets().items()}
        return ViewStatus(
            table=topic,
            actor_name=self.name,
            partitions=self.partitions,
            state=follower.state.value,
            keys=self.count(),
            lag={p: lag for (_, p), lag in follower.lags.items()},
            node_id=self._node_id,
            offsets=offsets,
            reconnects=follower.reconnects,
            reloads=follower.reloads,
            error=follower.error,
        )

    def ping(self) -> str:
        """The actor's state: connecting | recovering | running."""
        return self._follower.state.value

    def shutdown(self) -> None:
        """Stop following the changelog (reads keep being served)."""
        self._stop.set()
        self._thread.join(10)
