"""LocalTables: the table copies one partition runner keeps, current from their changelogs.

A runner keeps its group table, each joined table (at its partition) and every partition of
each lookup table, in LevelDB under ``storage_dir``. This class opens them (whole, or
discarded and new: :class:`~goka_ray.kafka.local_copy.LocalCopies`), checks them against
their changelogs at the first recovery (Goka issues #396 and #415), and hands them to the
runner's :class:`~goka_ray.kafka.changelog.ChangelogFollower`, which recovers and follows
them. A copy found damaged while recovering, following or processing is discarded and rebuilt
from its changelog (:meth:`LocalTables.rebuild`); the storage object stays the same, so the
core's references to it stay valid.

Invariants: only the runner's thread calls it; the copies are opened once and closed once
(:meth:`LocalTables.close`); a copy is used only after it was checked against its changelog;
the own table is followed only until the runner processes (:meth:`stop_following_own`), after
which the runner alone writes it, except while a damaged copy of it is rebuilt.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer

from goka_ray.core.graph import GroupGraph
from goka_ray.core.partition import PartitionCore
from goka_ray.core.partitioner import Partitioner
from goka_ray.core.storage import LevelDBStorage, Storage, partition_dir
from goka_ray.core.tables import PartitionedTable, TablePartition
from goka_ray.errors import BrokerError, LocalCopyDamaged
from goka_ray.kafka.changelog import ChangelogFollower, RecordFilter
from goka_ray.kafka.clients import end_offsets
from goka_ray.kafka.local_copy import LocalCopies
from goka_ray.kafka.topics import TopicManager

__all__ = ["LocalTables"]

logger = logging.getLogger(__name__)


class LocalTables:
    """The LevelDB copies of one partition runner's tables (see the module docstring).

    ``own`` and ``joins`` are the storages the runner's PartitionCore is built on;
    :meth:`recover` then collects the core's table partitions, opens the lookup copies
    (``partition_count(topic)`` partitions each) and connects them to the core.
    ``consumer`` (not assigned while recovering) reads the changelogs' ends for the check.
    ``delivery_timeout`` bounds how long a rebuilt own table waits for the batch just
    published to show in its changelog (seconds).
    """

    def __init__(
        self,
        brokers: str,
        graph: GroupGraph,
        partition: int,
        storage_dir: str | Path,
        *,
        follower: ChangelogFollower,
        consumer: Consumer,
        partitioner: Partitioner,
        partition_count: Callable[[str], int],
        delivery_timeout: float = 60.0,
    ) -> None:
        self.brokers = brokers
        self.graph = graph
        self.group = graph.group
        self.partition = partition
        self._follower = follower
        self._consumer = consumer
        self._partitioner = partitioner
        self._partition_count = partition_count
        self._delivery_timeout = delivery_timeout
        self._tables: dict[tuple[str, int], TablePartition] = {}
        self._own_filter: RecordFilter | None = None
        #: the copies were checked against their changelogs and handed to the follower
        self._checked = False
        self._copies = LocalCopies(self.group, partition)
        base = Path(storage_dir)
        self._lookup_dir = base / self.group / f"lookups-of-{partition:04d}"
        self.own: Storage | None = None
        if graph.persist is not None:
            self.own = self._open(partition_dir(base, self.group, graph.table_topic, partition))
        self.joins: dict[str, Storage] = {
            j.table: self._open(partition_dir(base, self.group, j.table, partition))
            for j in graph.joins
        }

    def _open(self, path: Path) -> LevelDBStorage:
        return self._copies.open(path)

    @property
    def follower(self) -> ChangelogFollower:
        return self._follower

    @property
    def _own_tp(self) -> tuple[str, int]:
        return (self.graph.table_topic, self.partition)

    def recover(
        self,
        core: PartitionCore,
        stop: threading.Event | None = None,
        *,
        own_filter: RecordFilter | None = None,
    ) -> int:
        """Read every copy to the end of its changelog; returns the records applied. The
        first call opens the lookup copies, checks every copy and starts following them
        (the own table's records through ``own_filter``). A copy found damaged on the way is
        discarded and read again from the beginning."""
        applied = 0
        while True:
            try:
                if not self._tables:
                    self._open_tables(core)
                if not self._checked:
                    self._check_local_copies()
                    self._own_filter = own_filter
                    for tp, table in self._tables.items():
                        keep = own_filter if tp == self._own_tp else None
                        self._follower.add(table, keep=keep)
                    self._checked = True
                applied += self._follower.recover(stop)
                return applied
            except LocalCopyDamaged as damage:
                self._copies.discard_damaged(damage)  # empty: read again from the beginning

    def poll(self, timeout: float) -> int:
        """Apply what arrived of the followed changelogs (waiting up to ``timeout`` seconds
        when nothing has); returns the records applied. A damaged copy is rebuilt."""
        try:
            return self._follower.poll(timeout)
        except LocalCopyDamaged as damage:
            return self.rebuild(damage)

    def stop_following_own(self) -> None:
        """The runner processes from now on: it alone writes its table."""
        self._follower.remove(*self._own_tp)

    def rebuild(
        self,
        damage: LocalCopyDamaged,
        *,
        reach: int | None = None,
        stop: threading.Event | None = None,
    ) -> int:
        """Discard the damaged copy and read its changelog into the new one (the same storage
        object, empty); returns the records applied. ``reach``: the own changelog offset the
        rebuilt table must get to (just after a batch this runner published: a read_committed
        consumer may see its transaction's end a moment after the commit returned)."""
        applied = 0
        while True:
            storage = self._copies.discard_damaged(damage)
            own = self._tables.get(self._own_tp)
            rebuilt_own = own is not None and own.storage is storage
            follow_own = rebuilt_own and self._own_tp not in self._follower.tables
            try:
                if own is not None and follow_own:
                    self._follower.add(own, keep=self._own_filter)
                applied += self._follower.recover(stop)
                if own is not None and rebuilt_own and reach is not None:
                    applied += self._read_own_until(own, reach, stop)
                return applied
            except LocalCopyDamaged as again:
                damage = again
            finally:
                if follow_own:
                    self._follower.remove(*self._own_tp)

    def _read_own_until(self, own: TablePartition, reach: int, stop: threading.Event | None) -> int:
        applied = 0
        deadline = time.monotonic() + self._delivery_timeout
        while (own.offset or 0) < reach:
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"group {self.group} partition {self.partition}: the changelog shows no "
                    f"records up to offset {reach} within {self._delivery_timeout}s after "
                    f"they were acknowledged; the rebuilt table cannot include its last batch"
                )
            time.sleep(0.05)
            applied += self._follower.recover(stop)
        return applied

    def close(self) -> None:
        self._follower.close()
        self._copies.close()

    def _open_tables(self, core: PartitionCore) -> None:
        """Collect every table partition this runner keeps: own, joined, lookup copies."""
        tables = self._tables
        if core.table is not None:
            tables[self._own_tp] = core.table
        for topic, joined in core.joins.items():
            tables[(topic, self.partition)] = joined
        for lookup in self.graph.lookups:
            topic = lookup.table
            parts = [
                TablePartition(
                    topic, q, self._open(self._lookup_dir / topic / f"{q:04d}"), lookup.codec
                )
                for q in range(self._partition_count(topic))
            ]
            for part in parts:
                tables[(topic, part.partition)] = part
            reader = PartitionedTable(topic, [p.storage for p in parts], self._partitioner)
            core.connect_lookup(topic, reader)

    def _check_local_copies(self) -> None:
        """Discard local table copies that do not belong to their changelog any more
        (:meth:`~goka_ray.kafka.local_copy.LocalCopies.check_against_changelog`)."""
        tables = self._tables
        with TopicManager(self.brokers) as topics:
            ids = topics.topic_ids({topic for topic, _ in tables})
        stored = {tp: t.offset for tp, t in tables.items() if t.offset is not None}
        ends = end_offsets(self._consumer, stored, timeout=10) if stored else {}
        self._copies.check_against_changelog(tables, ids, ends)
