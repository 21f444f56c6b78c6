"""The in-memory tester: run group graphs message by message, without Kafka or Ray.

It drives the same PartitionCore as the cluster runtime, with every topic split into
``partitions`` partitions by the library's partitioner, so key routing, joins (co-partitioned)
and lookups (any partition) behave as in production.

    t = Tester(graph)
    t.consume("user-clicks", "alice", "click")
    assert t.table_value(table("clicks"), "alice") == 1
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from goka_ray.core.codecs import Codec
from goka_ray.core.context import DeferredCommit
from goka_ray.core.graph import GroupGraph
from goka_ray.core.limits import DEFAULT_MAX_MESSAGE_BYTES, RecordLimit
from goka_ray.core.messages import InputMessage, OutgoingMessage, headers_dict, headers_list
from goka_ray.core.partition import BatchResult, PartitionCore
from goka_ray.core.partitioner import MURMUR2, Partitioner
from goka_ray.core.storage import MemoryStorage
from goka_ray.core.tables import ChangelogRecord, PartitionedTable
from goka_ray.errors import ConfigError, ProcessingError

__all__ = ["EmittedMessage", "Tester"]


@dataclass(frozen=True)
class EmittedMessage:
    """A message that went through a topic in the tester."""

    topic: str
    key: str | None
    value: Any
    headers: dict[str, bytes] = field(default_factory=dict)
    partition: int = 0
    offset: int = 0
    raw: bytes | None = None


class Tester:
    """Runs one or more group graphs in memory; deterministic, message by message.

    ``default_headers`` are put on every changelog record, emit and loopback of every group,
    under the headers a callback passes (as ``PartitionCore(default_headers=...)``).
    ``max_message_bytes`` bounds every record a group produces, as a group's
    ``max_message_bytes`` setting does on the cluster: a message that makes a larger record
    goes through its input's ``on_error`` policy (``fail``: :meth:`consume` raises a
    ProcessingError whose ``error`` is a :class:`~goka_ray.errors.RecordRejected`).
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
        self._reset()

    def _reset(self) -> None:
        n = self.partitions
        self._tables: dict[str, list[MemoryStorage]] = {
            t: [MemoryStorage() for _ in range(n)] for t in self._table_codecs
        }
        self._cores: dict[str, list[PartitionCore]] = {}
        self._consumers: dict[str, list[GroupGraph]] = {}
        # a Join with an update callback keeps its own copy of the table (as in production,
        # where it reads the changelog through the callback); other joins share the table
        self._join_copies: dict[str, list[str]] = {}
        for g in self.graphs:
            own: list[MemoryStorage | None] = list(self._tables.get(g.table_topic, [None] * n))
            joins: dict[str, list[MemoryStorage]] = {}
            for j in g.joins:
                if j.update is None:
                    joins[j.table] = self._tables[j.table]
                else:
                    joins[j.table] = [MemoryStorage() for _ in range(n)]
                    self._join_copies.setdefault(j.table, []).append(g.group)
            self._cores[g.group] = [
                PartitionCore(
                    g,
                    p,
                    own[p],
                    joins={t: storages[p] for t, storages in joins.items()},
                    lookups={
                        lk.table: PartitionedTable(
                            lk.table, self._tables[lk.table], self.partitioner
                        )
                        for lk in g.lookups
                    },
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

    def _lookup_table(self, table: str) -> PartitionedTable:
        return PartitionedTable(table, self._tables[table], self.partitioner)

    # -- feeding ------------------------------------------------------------------------------

    def consume(
        self,
        topic: str,
        key: str,
        value: Any,
        headers: Mapping[str, str | bytes] | None = None,
    ) -> None:
        """Deliver a message to ``topic`` and run everything it causes until quiescent.

        The value is encoded with the codec of each consuming Input edge. A failing callback
        raises :class:`~goka_ray.errors.ProcessingError` out of this call, and so does a deferred
        commit (``ctx.defer_commit()``) called with an error, here or since the last call.
        """
        self._check_deferred()
        consumers = self._consumers_of(topic)
        hdrs = headers_list(headers)
        kb = key.encode()
        # encode for every consumer first: a value one of them cannot encode delivers nothing
        encoded: list[bytes | None] = []
        for g in consumers:
            codec = next(s.codec for s in g.streams() if s.topic == topic)
            encoded.append(None if value is None else codec.encode(value))
        p = self._partition(kb)
        offset = self._next_offset(topic, p)
        for g, raw in zip(consumers, encoded, strict=True):
            self._queue.append((g, InputMessage(topic, p, offset, kb, raw, 0, hdrs)))
        self._record(topic, kb, value, encoded[0], hdrs, p, offset)
        self._run()

    def consume_raw(
        self,
        topic: str,
        key: str | None,
        data: bytes | None,
        headers: Mapping[str, str | bytes] | None = None,
    ) -> None:
        """Deliver already-encoded bytes (e.g. to test decode-error policies)."""
        self._check_deferred()
        consumers = self._consumers_of(topic)
        kb = key.encode() if key is not None else None
        p = self._partition(kb)
        offset = self._next_offset(topic, p)
        hdrs = headers_list(headers)
        for g in consumers:
            self._queue.append((g, InputMessage(topic, p, offset, kb, data, 0, hdrs)))
        self._record(topic, kb, data, data, hdrs, p, offset)
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
        consumers = self._consumers.get(topic)
        if not consumers:
            known = sorted(self._consumers)
            raise ConfigError(
                f"Tester: no registered group consumes {topic!r}; consumed topics: {known}"
            )
        return consumers

    def _partition(self, key: bytes | None) -> int:
        return 0 if key is None else self.partitioner.partition(key, self.partitions)

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
                changelog_offset = self._next_offset(graph.table_topic, partition)
                headers = result.table_headers.get(key)
                self._record(
                    graph.table_topic, key, value, data, headers, partition, changelog_offset
                )
                self._feed_copies(
                    graph.table_topic,
                    partition,
                    ChangelogRecord(key, data, changelog_offset, headers),
                    changelog_offset + 1,
                )
            changelog_offset += 1  # type: ignore[operator]
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

    def _feed_copies(
        self, table: str, partition: int, record: ChangelogRecord, next_offset: int | None
    ) -> None:
        """Apply a changelog record to the joins of ``table`` that have an update callback."""
        for group in self._join_copies.get(table, ()):
            core = self._cores[group][partition]
            reached = core.joins[table].offset or 0 if next_offset is None else next_offset
            core.recover_join(table, [record], reached)

    def _deliver(self, source: GroupGraph, out: OutgoingMessage) -> None:
        p = self._partition(out.key)
        offset = self._next_offset(out.topic, p)
        codec = source.output_codec(out.topic)
        if out.topic == source.loop_topic and source.loop is not None:
            codec = source.loop.codec
        value = (
            codec.decode(out.value) if codec is not None and out.value is not None else out.value
        )
        self._record(out.topic, out.key, value, out.value, out.headers, p, offset)
        for g in self._consumers.get(out.topic, ()):
            self._queue.append(
                (g, InputMessage(out.topic, p, offset, out.key, out.value, 0, out.headers))
            )

    def _record(
        self,
        topic: str,
        key: bytes | None,
        value: Any,
        raw: bytes | None,
        headers: list[tuple[str, bytes]] | None,
        partition: int,
        offset: int,
    ) -> None:
        self._messages.setdefault(topic, []).append(
            EmittedMessage(
                topic,
                key.decode() if key is not None else None,
                value,
                headers_dict(headers),
                partition,
                offset,
                raw,
            )
        )

    # -- tables -------------------------------------------------------------------------------

    def _table(self, table: str, call: str) -> tuple[list[MemoryStorage], Codec]:
        if table not in self._tables:
            raise ConfigError(
                f"Tester.{call}({table!r}, ...): no registered group persists, joins or looks up "
                f"{table!r}; known tables: {sorted(self._tables)}"
            )
        return self._tables[table], self._table_codecs[table]

    def table_value(self, table: str, key: str) -> Any:
        """The current value of ``key`` in ``table`` (None if absent)."""
        storages, codec = self._table(table, "table_value")
        kb = key.encode()
        raw = storages[self._partition(kb)].get(kb)
        return None if raw is None else codec.decode(raw)

    def set_table_value(self, table: str, key: str, value: Any) -> None:
        """Put a value into a table directly (to feed joins and lookups); None deletes.

        Joins of ``table`` with an update callback get the value through it, as a changelog
        record with offset -1. The value bypasses the changelog: :meth:`restart` loses it
        from a group's own table.
        """
        storages, codec = self._table(table, "set_table_value")
        kb = key.encode()
        p = self._partition(kb)
        data = None if value is None else codec.encode(value)
        if data is None:
            storages[p].delete(kb)
        else:
            storages[p].set(kb, data)
        self._feed_copies(table, p, ChangelogRecord(kb, data), None)

    def restart(self, *groups: str) -> None:
        """Restart groups (all if none named) on empty local storage.

        Each group's own table is rebuilt from the changelog records this tester recorded (see
        ``messages("<group>-table")``), through ``Persist(update=...)`` if the graph gives one,
        as a processor that lost its local state recovers. Joined tables keep their state: a
        replay through the same update callback would rebuild them as they are.
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
                key = None if m.key is None else m.key.encode()
                records[m.partition].append(
                    ChangelogRecord(key, m.raw, m.offset, headers_list(m.headers))
                )
            for p, core in enumerate(self._cores[graph.group]):
                assert core.table is not None
                core.discard_pending()
                core.table.storage.clear()
                next_offset = records[p][-1].offset + 1 if records[p] else 0
                core.recover(records[p], next_offset)

    def table_items(self, table: str) -> dict[str, Any]:
        """Every key and value of ``table``, sorted by key."""
        storages, codec = self._table(table, "table_items")
        merged = PartitionedTable(table, storages, self.partitioner).items()
        return {k.decode(): codec.decode(v) for k, v in merged}

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
