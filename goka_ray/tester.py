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

from goka_ray.codecs import Codec
from goka_ray.errors import ConfigError
from goka_ray.graph import GroupGraph
from goka_ray.messages import InputMessage, OutgoingMessage, headers_dict, headers_list
from goka_ray.partition import PartitionCore
from goka_ray.partitioner import MURMUR2, Partitioner
from goka_ray.storage import MemoryStorage
from goka_ray.tables import PartitionedTable

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
    """Runs one or more group graphs in memory; deterministic, message by message."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self, *graphs: GroupGraph, partitions: int = 4, partitioner: Partitioner = MURMUR2
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
        for g in self.graphs:
            own: list[MemoryStorage | None] = list(self._tables.get(g.table_topic, [None] * n))
            self._cores[g.group] = [
                PartitionCore(
                    g,
                    p,
                    own[p],
                    joins={j.table: self._tables[j.table][p] for j in g.joins},
                    lookups={
                        lk.table: PartitionedTable(
                            lk.table, self._tables[lk.table], self.partitioner
                        )
                        for lk in g.lookups
                    },
                )
                for p in range(n)
            ]
            for topic in g.stream_topics():
                self._consumers.setdefault(topic, []).append(g)
        self._messages: dict[str, list[EmittedMessage]] = {}
        self._offsets: dict[tuple[str, int], int] = {}
        self._queue: deque[tuple[GroupGraph, InputMessage]] = deque()

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
        raises :class:`~goka_ray.errors.ProcessingError` out of this call.
        """
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
        consumers = self._consumers_of(topic)
        kb = key.encode() if key is not None else None
        p = self._partition(kb)
        offset = self._next_offset(topic, p)
        hdrs = headers_list(headers)
        for g in consumers:
            self._queue.append((g, InputMessage(topic, p, offset, kb, data, 0, hdrs)))
        self._record(topic, kb, data, data, hdrs, p, offset)
        self._run()

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
            result = core.process([msg])
            if result.failure is not None:
                self._queue.clear()
                raise result.failure
            changelog_offset = None
            if result.table_writes:
                assert graph.persist is not None
                for key, data in result.table_writes.items():
                    value = None if data is None else graph.persist.codec.decode(data)
                    changelog_offset = self._next_offset(graph.table_topic, msg.partition)
                    self._record(
                        graph.table_topic, key, value, data, None, msg.partition, changelog_offset
                    )
                changelog_offset += 1  # type: ignore[operator]
            core.commit(result, changelog_offset)
            for out in result.emits:
                self._deliver(graph, out)

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
        """Put a value into a table directly (to feed joins and lookups); None deletes."""
        storages, codec = self._table(table, "set_table_value")
        kb = key.encode()
        storage = storages[self._partition(kb)]
        if value is None:
            storage.delete(kb)
        else:
            storage.set(kb, codec.encode(value))

    def table_items(self, table: str) -> dict[str, Any]:
        """Every key and value of ``table``, sorted by key."""
        storages, codec = self._table(table, "table_items")
        merged = PartitionedTable(table, storages, self.partitioner).items()
        return {k.decode(): codec.decode(v) for k, v in merged}

    # -- observing ----------------------------------------------------------------------------

    def messages(self, topic: str) -> list[EmittedMessage]:
        """Every message that went through ``topic`` (inputs, emits, loopbacks, changelog)."""
        return list(self._messages.get(topic, ()))

    def clear(self) -> None:
        """Forget every table, message and offset: a fresh start for the next test."""
        self._reset()
