"""The in-memory tester: run group graphs message by message, without Kafka or Ray.

It drives the same PartitionCore as the cluster runtime, with every topic split into
``partitions`` partitions by the library's partitioner, so key routing, joins (co-partitioned)
and lookups (any partition) behave as in production.

    t = Tester(graph)
    t.consume("user-clicks", "alice", "click")
    assert t.table_value(table("clicks"), "alice") == 1

Routing is the broker's: every record appended to a topic (a consumed message, a changelog
record, an emit, a loopback, a dead letter) reaches every consumer of that topic. Groups that
consume it as a stream (``Input``, ``Loop``) get it as a message, in order; readers of it as a
table (``Join``, ``Lookup``, and what a View would show) apply it to their copy, as a changelog
follower does. A group's own table is its own copy (LevelDB in production), written only by its
callbacks; records that others write to its changelog reach it when it recovers
(:meth:`Tester.restart`), as on the broker.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from goka_ray.core.codecs import Codec
from goka_ray.core.context import DeferredCommit
from goka_ray.core.graph import GroupGraph
from goka_ray.core.keys import decode_key, encode_key
from goka_ray.core.limits import DEFAULT_MAX_MESSAGE_BYTES, RecordLimit
from goka_ray.core.messages import (
    Headers,
    InputMessage,
    OutgoingMessage,
    headers_dict,
    headers_list,
)
from goka_ray.core.partition import BatchResult, PartitionCore
from goka_ray.core.partitioner import MURMUR2, Partitioner
from goka_ray.core.storage import MemoryStorage, Storage
from goka_ray.core.tables import ChangelogRecord, PartitionedTable, TablePartition
from goka_ray.errors import ConfigError, ProcessingError

__all__ = ["EmittedMessage", "Tester"]

Key = str | bytes


@dataclass(frozen=True)
class EmittedMessage:
    """A message that went through a topic in the tester.

    ``key`` is lossless text (see :mod:`goka_ray.core.keys`), None for a message without a key;
    ``key_bytes`` gives the raw key.
    """

    topic: str
    key: str | None
    value: Any
    headers: dict[str, bytes] = field(default_factory=dict)
    partition: int = 0
    offset: int = 0
    raw: bytes | None = None

    @property
    def key_bytes(self) -> bytes | None:
        """The key as Kafka holds it."""
        return None if self.key is None else encode_key(self.key)


class Tester:
    """Runs one or more group graphs in memory; deterministic, message by message.

    ``default_headers`` are put on every changelog record, emit and loopback of every group,
    under the headers a callback passes (as ``PartitionCore(default_headers=...)``).
    ``max_message_bytes`` bounds every record a group produces, as a group's
    ``max_message_bytes`` setting does on the cluster: a message that makes a larger record
    goes through its input's ``on_error`` policy (``fail``: :meth:`consume` raises a
    ProcessingError whose ``error`` is a :class:`~goka_ray.errors.RecordRejected`).
    A message without a key goes to the partition given to :meth:`consume` (default 0), where
    a producer would pick one.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        *graphs: GroupGraph,
        partitions: int = 4,
        partitioner: Partitioner = MURMUR2,
        default_headers: Mapping[str, str | bytes] | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        if not graphs:
            raise ConfigError("Tester() needs at least one group graph")
        if partitions < 1:
            raise ConfigError(f"Tester(partitions={partitions}): use at least 1 partition")
        groups = [g.group for g in graphs]
        if len(set(groups)) != len(groups):
            raise ConfigError(f"Tester: a group is registered twice: {groups}")
        self.graphs = graphs
        self.partitions = partitions
        self.partitioner = partitioner
        self.default_headers = dict(default_headers or {})
        self.limit = RecordLimit(max_message_bytes)
        self._table_codecs: dict[str, Codec] = {}
        for g in graphs:
            for j in g.joins:
                self._table_codecs.setdefault(j.table, j.codec)
            for lk in g.lookups:
                self._table_codecs.setdefault(lk.table, lk.codec)
        for g in graphs:  # a group's own codec wins over what its readers declare
            if g.persist is not None:
                self._table_codecs[g.table_topic] = g.persist.codec
        #: the group that owns each table topic
        self._owners = {g.table_topic: g.group for g in graphs if g.persist is not None}
        self._reset()

    def _reset(self) -> None:
        n = self.partitions
        # the copy of each table topic its readers hold (joins, lookups; what a view shows):
        # every record of the topic applied in order, as a changelog follower does
        self._readers: dict[str, list[TablePartition]] = {
            t: [TablePartition(t, p, MemoryStorage(), codec) for p in range(n)]
            for t, codec in self._table_codecs.items()
        }
        self._cores: dict[str, list[PartitionCore]] = {}
        self._consumers: dict[str, list[GroupGraph]] = {}
        # a Join with an update callback keeps its own copy of the table (as in production,
        # where it reads the changelog through the callback); other joins share the readers'
        self._join_copies: dict[str, list[str]] = {}
        for g in self.graphs:
            joins: dict[str, list[Storage]] = {}
            for j in g.joins:
                if j.update is None:
                    joins[j.table] = self._reader_storages(j.table)
                else:
                    joins[j.table] = [MemoryStorage() for _ in range(n)]
                    self._join_copies.setdefault(j.table, []).append(g.group)
            lookups = {
                lk.table: PartitionedTable(
                    lk.table, self._reader_storages(lk.table), self.partitioner
                )
                for lk in g.lookups
            }
            self._cores[g.group] = [
                PartitionCore(
                    g,
                    p,
                    MemoryStorage() if g.persist is not None else None,
                    joins={t: storages[p] for t, storages in joins.items()},
                    lookups=lookups,
                    default_headers=self.default_headers,
                    limit=self.limit,
                )
                for p in range(n)
            ]
            for topic in g.stream_topics():
                self._consumers.setdefault(topic, []).append(g)
        self._messages: dict[str, list[EmittedMessage]] = {}
        self._offsets: dict[tuple[str, int], int] = {}
        self._queue: deque[tuple[GroupGraph, InputMessage]] = deque()
        # (group, topic, partition) -> (next offset, deferred commits of the message) in order
        self._pending_commits: dict[
            tuple[str, str, int], deque[tuple[int, list[DeferredCommit]]]
        ] = {}
        self._committed: dict[tuple[str, str, int], int] = {}
        self._deferred: list[tuple[str, DeferredCommit]] = []

    def _reader_storages(self, table: str) -> list[Storage]:
        return [t.storage for t in self._readers[table]]

    # -- feeding ------------------------------------------------------------------------------

    def consume(
        self,
        topic: str,
        key: Key | None,
        value: Any,
        headers: Mapping[str, str | bytes] | None = None,
        *,
        partition: int | None = None,
    ) -> None:
        """Deliver a message to ``topic`` and run everything it causes until quiescent.

        ``key`` is str or bytes (None: a message without a key, at ``partition``, default 0;
        a keyed message goes where the partitioner puts it). The value is encoded with the
        codec of each group that consumes ``topic`` as a stream, and with the table codec for
        the readers of ``topic`` as a table (a Join, a Lookup). A failing callback raises
        :class:`~goka_ray.errors.ProcessingError` out of this call, and so does a deferred
        commit (``ctx.defer_commit()``) called with an error, here or since the last call.
        """
        self._check_deferred()
        consumers = self._consumers_of(topic)
        hdrs = headers_list(headers)
        kb = self._key(key, "consume")
        # encode for every consumer first: a value one of them cannot encode delivers nothing
        encoded: list[bytes | None] = []
        for g in consumers:
            codec = next(s.codec for s in g.streams() if s.topic == topic)
            encoded.append(None if value is None else codec.encode(value))
        table_codec = self._table_codecs.get(topic)
        as_table = None
        if table_codec is not None and value is not None:
            as_table = table_codec.encode(value)
        p = self._partition_for(kb, partition)
        offset = self._next_offset(topic, p)
        for g, raw in zip(consumers, encoded, strict=True):
            self._queue.append((g, InputMessage(topic, p, offset, kb, raw, 0, hdrs)))
        self._record(topic, kb, value, (encoded or [as_table])[0], hdrs, p, offset)
        if table_codec is not None:
            self._feed_readers(topic, p, ChangelogRecord(kb, as_table, offset, hdrs))
        self._run()

    def consume_raw(
        self,
        topic: str,
        key: Key | None,
        data: bytes | None,
        headers: Mapping[str, str | bytes] | None = None,
        *,
        partition: int | None = None,
    ) -> None:
        """Deliver already-encoded bytes (e.g. to test decode-error policies); ``key`` and
        ``partition`` as for :meth:`consume`."""
        self._check_deferred()
        self._consumers_of(topic)
        kb = self._key(key, "consume_raw")
        p = self._partition_for(kb, partition)
        self._append(topic, p, kb, data, headers_list(headers), data)
        self._run()

    def visit_all(self, name: str, meta: Any = None, group: str | None = None) -> int:
        """Run the Visitor ``name`` over every key of the table of each group that declares
        it (or only ``group``), partition by partition, then everything it causes.

        Returns the number of keys visited. A failing visitor raises
        :class:`~goka_ray.errors.ProcessingError`.
        """
        self._check_deferred()
        graphs = [
            g
            for g in self.graphs
            if g.visitor(name) is not None and (group is None or g.group == group)
        ]
        if not graphs:
            who = "no registered group" if group is None else f"group {group!r} declares no"
            who = f"{who} declares" if group is None else who
            declared = sorted({v.name for g in self.graphs for v in g.visitors})
            raise ConfigError(
                f"Tester.visit_all({name!r}): {who} Visitor({name!r}); add "
                f"Visitor({name!r}, callback) to define_group (declared visitors: {declared})"
            )
        visited = 0
        for graph in graphs:
            for p, core in enumerate(self._cores[graph.group]):
                result = core.visit(name, meta)
                visited += result.visited
                self._publish(graph, p, result)
                self._run()
        return visited

    def _consumers_of(self, topic: str) -> list[GroupGraph]:
        """The groups consuming ``topic`` as a stream; ConfigError if nobody reads it at all."""
        consumers = self._consumers.get(topic, [])
        if not consumers and topic not in self._readers:
            raise ConfigError(
                f"Tester: no registered group consumes or reads {topic!r}; consumed topics: "
                f"{sorted(self._consumers)}, tables: {sorted(self._readers)}"
            )
        return consumers

    @staticmethod
    def _key(key: Key | None, call: str) -> bytes | None:
        try:
            return None if key is None else encode_key(key, f"Tester.{call}()")
        except TypeError as exc:
            raise ConfigError(str(exc)) from None

    def _partition(self, key: bytes | None) -> int:
        return 0 if key is None else self.partitioner.partition(key, self.partitions)

    def _partition_for(self, key: bytes | None, partition: int | None) -> int:
        if partition is None:
            return self._partition(key)
        if not 0 <= partition < self.partitions:
            raise ConfigError(
                f"Tester: partition {partition} does not exist; use 0..{self.partitions - 1}"
            )
        if key is not None and partition != self._partition(key):
            raise ConfigError(
                f"Tester: key {decode_key(key)!r} belongs to partition {self._partition(key)}, "
                f"not {partition}; give a partition only for a message without a key"
            )
        return partition

    def _next_offset(self, topic: str, partition: int) -> int:
        offset = self._offsets.get((topic, partition), 0)
        self._offsets[(topic, partition)] = offset + 1
        return offset

    def _run(self) -> None:
        while self._queue:
            graph, msg = self._queue.popleft()
            core = self._cores[graph.group][msg.partition]
            self._publish(graph, msg.partition, core.process([msg]))

    def _publish(self, graph: GroupGraph, partition: int, result: BatchResult) -> None:
        """Do with a batch result what the runner does: changelog, commit, emits, offsets."""
        if result.failure is not None:
            self._queue.clear()
            raise result.failure
        core = self._cores[graph.group][partition]
        changelog_offset = None
        if result.table_writes:
            assert graph.persist is not None
            for key, data in result.table_writes.items():
                value = None if data is None else graph.persist.codec.decode(data)
                headers = result.table_headers.get(key)
                offset = self._append(graph.table_topic, partition, key, data, headers, value)
                changelog_offset = offset + 1
        core.commit(result, changelog_offset)
        for out in result.emits:
            self._deliver(graph, out)
        for (topic, p), position in result.positions.items():
            self._pending_commits.setdefault((graph.group, topic, p), deque()).append(
                (position, result.deferred)
            )
        self._deferred.extend((graph.group, d) for d in result.deferred)
        self._check_deferred()

    def _check_deferred(self) -> None:
        """Raise the failure of the first deferred commit called with an error (once)."""
        for i, (group, d) in enumerate(self._deferred):
            if d.error is not None:
                del self._deferred[i]
                self._queue.clear()
                raise ProcessingError(group, d.topic, d.partition, d.offset, d.key, d.error)
        self._deferred = [(g, d) for g, d in self._deferred if not d.done]

    def _append(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        raw: bytes | None,
        headers: Headers | None,
        value: Any,
    ) -> int:
        """Append a record to ``topic[partition]`` and route it to every consumer of the
        topic: stream consumers get it queued, table readers apply it. Returns its offset."""
        offset = self._next_offset(topic, partition)
        self._record(topic, key, value, raw, headers, partition, offset)
        if topic in self._readers:
            self._feed_readers(topic, partition, ChangelogRecord(key, raw, offset, headers))
        for g in self._consumers.get(topic, ()):
            self._queue.append((g, InputMessage(topic, partition, offset, key, raw, 0, headers)))
        return offset

    def _feed_readers(self, table: str, partition: int, record: ChangelogRecord) -> None:
        """Apply a record of ``table`` to its readers' copy and to the joins of it that have
        an update callback (each through the callback)."""
        next_offset = record.offset + 1
        self._readers[table][partition].apply_changelog([record], next_offset)
        self._feed_copies(table, partition, record, next_offset)

    def _feed_copies(
        self, table: str, partition: int, record: ChangelogRecord, next_offset: int | None
    ) -> None:
        """Apply a changelog record to the joins of ``table`` that have an update callback."""
        for group in self._join_copies.get(table, ()):
            core = self._cores[group][partition]
            reached = core.joins[table].offset or 0 if next_offset is None else next_offset
            core.recover_join(table, [record], reached)

    def _deliver(self, source: GroupGraph, out: OutgoingMessage) -> None:
        """Produce an emit, loopback or dead letter: the partition it names, else its key's."""
        p = out.partition if out.partition is not None else self._partition(out.key)
        codec = source.output_codec(out.topic)
        if out.topic == source.loop_topic and source.loop is not None:
            codec = source.loop.codec
        value = (
            codec.decode(out.value) if codec is not None and out.value is not None else out.value
        )
        self._append(out.topic, p, out.key, out.value, out.headers, value)

    def _record(
        self,
        topic: str,
        key: bytes | None,
        value: Any,
        raw: bytes | None,
        headers: Headers | None,
        partition: int,
        offset: int,
    ) -> None:
        self._messages.setdefault(topic, []).append(
            EmittedMessage(
                topic,
                decode_key(key) if key is not None else None,
                value,
                headers_dict(headers),
                partition,
                offset,
                raw,
            )
        )

    # -- tables -------------------------------------------------------------------------------

    def _table(self, table: str, call: str) -> tuple[list[Storage], Codec]:
        """The storages of ``table`` as its users see it: the owner group's own copy if a
        registered group persists it, else its readers' copy."""
        if table not in self._readers:
            raise ConfigError(
                f"Tester.{call}({table!r}, ...): no registered group persists, joins or looks up "
                f"{table!r}; known tables: {sorted(self._readers)}"
            )
        owner = self._owners.get(table)
        if owner is not None:
            storages: list[Storage] = []
            for core in self._cores[owner]:
                assert core.table is not None
                storages.append(core.table.storage)
        else:
            storages = self._reader_storages(table)
        return storages, self._table_codecs[table]

    def table_value(self, table: str, key: Key) -> Any:
        """The current value of ``key`` (str or bytes) in ``table`` (None if absent): as its
        owner group holds it, or for a table no registered group persists, as its readers do."""
        storages, codec = self._table(table, "table_value")
        kb = self._key(key, "table_value")
        assert kb is not None
        raw = storages[self._partition(kb)].get(kb)
        return None if raw is None else codec.decode(raw)

    def set_table_value(self, table: str, key: Key, value: Any) -> None:
        """Put a value into a table directly (to feed joins and lookups); None deletes.

        The owner group's copy and every reader's copy get it; joins of ``table`` with an
        update callback get it through the callback, as a changelog record with offset -1.
        The value bypasses the changelog: no stream consumer of ``table`` sees it, and
        :meth:`restart` loses it from a group's own table.
        """
        _, codec = self._table(table, "set_table_value")
        kb = self._key(key, "set_table_value")
        assert kb is not None
        p = self._partition(kb)
        data = None if value is None else codec.encode(value)
        targets = [self._readers[table][p].storage]
        owner = self._owners.get(table)
        if owner is not None:
            own = self._cores[owner][p].table
            assert own is not None
            targets.append(own.storage)
        for storage in targets:
            if data is None:
                storage.delete(kb)
            else:
                storage.set(kb, data)
        self._feed_copies(table, p, ChangelogRecord(kb, data), None)

    def restart(self, *groups: str) -> None:
        """Restart groups (all if none named) on empty local storage.

        Each group's own table is rebuilt from the records of its changelog (see
        ``messages("<group>-table")``, its own writes and any other producer's), through
        ``Persist(update=...)`` if the graph gives one, as a processor that lost its local
        state recovers. Joined tables keep their state: a replay through the same update
        callback would rebuild them as they are.
        """
        known = [g.group for g in self.graphs]
        for name in groups:
            if name not in known:
                raise ConfigError(f"Tester.restart({name!r}): no such group; groups: {known}")
        for graph in self.graphs:
            if (groups and graph.group not in groups) or graph.persist is None:
                continue
            records: list[list[ChangelogRecord]] = [[] for _ in range(self.partitions)]
            for m in self._messages.get(graph.table_topic, ()):
                records[m.partition].append(
                    ChangelogRecord(m.key_bytes, m.raw, m.offset, headers_list(m.headers))
                )
            for p, core in enumerate(self._cores[graph.group]):
                assert core.table is not None
                core.discard_pending()
                core.table.storage.clear()
                next_offset = records[p][-1].offset + 1 if records[p] else 0
                core.recover(records[p], next_offset)

    def table_items(self, table: str) -> dict[str, Any]:
        """Every key (lossless text) and value of ``table``, sorted by key bytes; the copy
        read is the one :meth:`table_value` reads."""
        storages, codec = self._table(table, "table_items")
        merged = PartitionedTable(table, storages, self.partitioner).items()
        return {decode_key(k): codec.decode(v) for k, v in merged}

    # -- observing ----------------------------------------------------------------------------

    def committed_offset(self, group: str, topic: str, partition: int) -> int | None:
        """The input offset ``group`` would have committed for ``topic[partition]``.

        It only passes a message once every ``ctx.defer_commit()`` callable of that message
        and of the messages before it was called without an error (None: nothing committed).
        """
        key = (group, topic, partition)
        queue = self._pending_commits.get(key)
        while queue and all(d.done and d.error is None for d in queue[0][1]):
            self._committed[key] = queue.popleft()[0]
        return self._committed.get(key)

    def deferred_pending(self) -> int:
        """How many ``ctx.defer_commit()`` callables were not called yet.

        Raises the ProcessingError of a deferred commit called with an error since the last
        check (as the next :meth:`consume` would).
        """
        self._check_deferred()
        return len(self._deferred)

    def messages(self, topic: str) -> list[EmittedMessage]:
        """Every message that went through ``topic`` (inputs, emits, loopbacks, changelog)."""
        return list(self._messages.get(topic, ()))

    def clear(self) -> None:
        """Forget every table, message and offset: a fresh start for the next test."""
        self._reset()
