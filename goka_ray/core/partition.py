"""PartitionCore: processes the messages of one partition of a processor group.

Pure logic: no Ray, no Kafka client. The Kafka runner, the Ray actors and the in-memory tester
all drive this class, so a group behaves the same in a unit test and on a cluster.

Life of a batch::

    result = core.process(messages)      # run callbacks; table writes kept pending in memory
    ... produce result.changelog() and result.emits, wait until Kafka acknowledges them ...
    core.commit(result, changelog_offset) # write the table batch + changelog offset atomically
    ... commit result.positions as the consumer offsets ...

Until ``commit``, callbacks of later batches already see the pending writes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from goka_ray.core.codecs import Codec, decode_error
from goka_ray.core.context import Context, DeferredCommit, Effects
from goka_ray.core.graph import GroupGraph, StreamEdge
from goka_ray.core.keys import decode_key, encode_key
from goka_ray.core.limits import RECORD_OVERHEAD, RecordLimit
from goka_ray.core.messages import (
    Headers,
    InputMessage,
    OutgoingMessage,
    headers_dict,
    headers_list,
)
from goka_ray.core.stats import CounterFields, PartitionStats
from goka_ray.core.storage import MemoryStorage, Storage, WriteBatch
from goka_ray.core.tables import ChangelogRecord, TablePartition
from goka_ray.errors import (
    CallbackFailed,
    CodecError,
    ConfigError,
    ContextError,
    GokaRayError,
    ProcessingError,
    RecordRejected,
    StorageError,
    readable,
)

__all__ = ["VISIT_TOPIC", "BatchResult", "PartitionCore", "TableReader"]

#: ``ctx.topic`` of a Visitor's callback
VISIT_TOPIC = "__visit__"

logger = logging.getLogger(__name__)

#: most committed values a core remembers between two commits (see ``PartitionCore.commit``)
_KNOWN_LIMIT = 100_000

#: what a rejected message is called in logs, by the stage that rejected it (the dead letter's
#: ``goka-ray.stage`` header)
_REJECTED = {
    "undecodable": "undecodable message",
    "callback": "message whose callback raised",
    "produce": "message whose record Kafka refuses",
    "null_key": "message without a key",
}


class TableReader(Protocol):
    """Read access to a whole table by raw key (a lookup source)."""

    def get(self, key: bytes) -> bytes | None: ...


@dataclass
class BatchResult(CounterFields):
    """What processing a batch produced, to be published before the batch counts as done.

    ``stats`` holds the batch's counters (also readable as ``result.processed`` etc.); they
    were added to the partition's :class:`~goka_ray.core.stats.PartitionStats` when the batch
    was processed.
    """

    #: coalesced table writes (key -> encoded value, None = delete), for storage and changelog
    table_writes: dict[bytes, bytes | None] = field(default_factory=dict)
    #: headers of the changelog record of a key in ``table_writes`` (default headers included);
    #: keys without headers are absent
    table_headers: dict[bytes, Headers] = field(default_factory=dict)
    #: emits, loopbacks and dead letters, in the order the callbacks made them
    emits: list[OutgoingMessage] = field(default_factory=list)
    #: next offset to consume per (topic, partition) of the messages handled (processed,
    #: skipped or dead-lettered); commit these once everything above is acknowledged
    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    #: the batch's counters: processed; skipped (undecodable, ignored tombstones, or whose
    #: callback raised under ``skip``); dead_lettered; callback_errors, unproducible and
    #: null_keys (of the skipped and dead-lettered, those whose callback raised / that made a
    #: record Kafka refuses / that had no key); visited (keys a visitor ran for)
    stats: PartitionStats = field(default_factory=PartitionStats)
    #: set when a callback failed; the failing message and the rest of the batch were not applied
    failure: ProcessingError | None = None
    #: the ``ctx.defer_commit()`` callables of the batch's applied messages, in message order;
    #: commit ``positions`` only once :meth:`wait_deferred` returned None
    deferred: list[DeferredCommit] = field(default_factory=list)
    #: group name, for the errors of :meth:`wait_deferred`
    group: str = ""

    def wait_deferred(self, timeout: float | None = None) -> ProcessingError | None:
        """Block until every deferred commit of the batch was called.

        Returns None if all succeeded, else a ProcessingError for the first failed one (in
        message order) with the error it was called with as ``error``. Raises TimeoutError if
        some are still not called after ``timeout`` seconds (None waits forever).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for deferred in self.deferred:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not deferred.wait(left):
                pending = sum(1 for d in self.deferred if not d.done)
                raise TimeoutError(
                    f"group {self.group!r}: {pending} deferred commit(s) not done after "
                    f"{timeout}s (first: {deferred!r}); every callable ctx.defer_commit() "
                    f"returns must be called"
                )
        return self.deferred_error()

    def deferred_error(self) -> ProcessingError | None:
        """The failure of the first deferred commit called with an error, without waiting."""
        for d in self.deferred:
            if d.error is not None:
                return ProcessingError(self.group, d.topic, d.partition, d.offset, d.key, d.error)
        return None

    @property
    def deferred_pending(self) -> int:
        """How many deferred commits of the batch were not called yet."""
        return sum(1 for d in self.deferred if not d.done)

    def changelog(self) -> list[OutgoingMessage]:
        """The table writes as changelog records (only the last value of each key), with the
        headers of that last write (``topic`` is left empty: it is the group table's)."""
        headers = self.table_headers
        return [OutgoingMessage("", k, v, headers.get(k)) for k, v in self.table_writes.items()]


class PartitionCore:
    """Processes one partition of a group graph against its table storage.

    ``limit`` bounds every record the group produces (changelog records, emits, loopbacks,
    dead letters): a message whose callback makes a larger one goes through its input's
    ``on_error`` policy, as if the callback raised :class:`~goka_ray.errors.RecordRejected`.
    """

    def __init__(
        self,
        graph: GroupGraph,
        partition: int,
        storage: Storage | None = None,
        *,
        joins: Mapping[str, Storage] | None = None,
        lookups: Mapping[str, TableReader] | None = None,
        default_headers: Mapping[str, str | bytes] | None = None,
        limit: RecordLimit | None = None,
        stats: PartitionStats | None = None,
    ) -> None:
        self.graph = graph
        self.limit = limit or RecordLimit()
        #: key + value bytes a write without headers may have without a closer look
        self._room = self.limit.max_message_bytes - self.limit.reserved_bytes - RECORD_OVERHEAD
        self.group = graph.group
        self.partition = partition
        self._streams: dict[str, StreamEdge] = {s.topic: s for s in graph.streams()}
        self._table_codec: Codec | None = graph.persist.codec if graph.persist else None
        self.table: TablePartition | None = None
        if graph.persist is not None:
            self.table = TablePartition(
                graph.table_topic,
                partition,
                storage or MemoryStorage(),
                graph.persist.codec,
                update=graph.persist.update,
                group=self.group,
            )
        joins = joins or {}
        missing = [j.table for j in graph.joins if j.table not in joins]
        if missing:
            raise ValueError(
                f"group {self.group!r} partition {partition}: no storage for joins {missing}"
            )
        self.joins: dict[str, TablePartition] = {
            j.table: TablePartition(
                j.table, partition, joins[j.table], j.codec, update=j.update, group=self.group
            )
            for j in graph.joins
        }
        lookups = lookups or {}
        self._lookups: dict[str, tuple[TableReader | None, Codec]] = {
            lk.table: (lookups.get(lk.table), lk.codec) for lk in graph.lookups
        }
        self._outputs: dict[str, Codec] = {o.topic: o.codec for o in graph.outputs}
        self._pending: dict[bytes, bytes | None] = {}
        #: committed values read from the table storage since its last write (what it holds
        #: for those keys): handed to the storage at commit, so it need not read them again
        self._stored: dict[bytes, bytes | None] = {}
        #: headers on every changelog record, emit and loopback, under the per-call headers
        self.default_headers: dict[str, bytes] = headers_dict(headers_list(default_headers))
        #: the partition's counters (the runner passes its record, so the core counts into it)
        self.stats = stats if stats is not None else PartitionStats()
        #: a storage error a callback's read met (even if the callback caught it)
        self._storage_failure: StorageError | None = None
        #: what the running callback does (one record, handed to each Context in turn)
        self._effects = Effects()

    # -- what Context calls -------------------------------------------------------------------

    def table_codec(self, call: str) -> Codec:
        if self._table_codec is None:
            raise ContextError(
                f"{call}: group {self.group!r} has no table; add Persist(codec) to define_group"
            )
        return self._table_codec

    def outgoing_headers(self, headers: Mapping[str, str | bytes] | None) -> Headers | None:
        """Per-call ``headers`` over the default headers, as Kafka pairs (None if neither)."""
        defaults = self.default_headers
        if not headers:
            return list(defaults.items()) if defaults else None
        pairs = headers_list(headers) or []
        if not defaults:
            return pairs
        return list({**defaults, **dict(pairs)}.items())

    def read_own(self, key: bytes) -> bytes | None:
        """The group table's encoded value of ``key``: this partition's pending writes first."""
        pending = self._pending
        if key in pending:
            return pending[key]
        assert self.table is not None
        try:
            value = self.table.storage.get(key)
        except StorageError as exc:
            self._storage_failure = exc
            raise
        stored = self._stored
        if len(stored) < _KNOWN_LIMIT:  # a visit over a large table reads every key
            stored[key] = value
        return value

    def output_codec(self, topic: str) -> Codec:
        codec = self._outputs.get(topic)
        if codec is None:
            declared = ", ".join(repr(t) for t in self._outputs) or "none"
            raise ContextError(
                f"ctx.emit({topic!r}, ...): group {self.group!r} declares no Output({topic!r}); "
                f"add Output({topic!r}, codec) to define_group (declared outputs: {declared})"
            )
        return codec

    def loop_edge(self) -> tuple[str, Codec]:
        if self.graph.loop is None:
            raise ContextError(
                f"ctx.loopback(): group {self.group!r} has no Loop edge; add Loop(codec, "
                f"callback) to define_group"
            )
        return self.graph.loop_topic, self.graph.loop.codec

    def read_join(self, table: str, key: str | bytes) -> Any:
        """The decoded value of ``key`` (str or bytes) in the joined ``table`` at this
        partition."""
        joined = self.joins.get(table)
        if joined is None:
            raise ContextError(
                f"ctx.join({table!r}): group {self.group!r} declares no Join({table!r}); add "
                f"Join({table!r}, codec) to define_group"
            )
        try:
            return joined.get(key)
        except StorageError as exc:
            self._storage_failure = exc
            raise

    def read_lookup(self, table: str, key: str | bytes) -> Any:
        """The decoded value of ``key`` (str or bytes) in the lookup ``table`` (any
        partition)."""
        entry = self._lookups.get(table)
        if entry is None:
            raise ContextError(
                f"ctx.lookup({table!r}, ...): group {self.group!r} declares no Lookup({table!r}); "
                f"add Lookup({table!r}, codec) to define_group"
            )
        reader, codec = entry
        if reader is None:
            raise ContextError(
                f"ctx.lookup({table!r}, ...): the lookup table is not connected to this partition"
            )
        kb = key if isinstance(key, bytes) else encode_key(key, "read_lookup")
        try:
            raw = reader.get(kb)
        except StorageError as exc:
            self._storage_failure = exc
            raise
        return None if raw is None else codec.decode(raw)

    def connect_lookup(self, table: str, reader: TableReader) -> None:
        """Attach the source of a Lookup edge (the runtime does this once it is recovered)."""
        if table not in self._lookups:
            raise ValueError(f"group {self.group!r} declares no Lookup({table!r})")
        self._lookups[table] = (reader, self._lookups[table][1])

    # -- processing ---------------------------------------------------------------------------

    def process(self, messages: Iterable[InputMessage]) -> BatchResult:
        """Run the callbacks for a batch of messages, in order.

        Stops at the first failing message: its effects and those of the messages after it are
        not in the result, and ``result.failure`` says what happened.

        Raises :class:`~goka_ray.errors.StorageError` if a read of the table, a joined table or
        a lookup table failed (a damaged local copy), whatever the input's ``on_error`` policy
        and even if the callback caught the error: the whole batch is abandoned, nothing of it
        is to be published; discard the pending writes and process it again once the storage
        is rebuilt. A storage error is never a callback failure.
        """
        result = BatchResult(group=self.group)
        positions = result.positions
        streams = self._streams
        room = self._room
        effects = self._effects
        processed = 0
        for msg in messages:
            stream = streams.get(msg.topic)
            if stream is None:
                result.failure = self._failure(
                    msg, None, ContextError(f"group {self.group!r} does not consume {msg.topic!r}")
                )
                break
            if msg.key is not None:
                key: str | None = decode_key(msg.key)
            elif stream.null_key == "process":
                key = None
            else:
                if not self._keyless(stream, msg, result):
                    break
                positions[(msg.topic, msg.partition)] = msg.offset + 1
                continue
            raw = msg.value
            if raw is None and stream.nil != "decode":
                if stream.nil == "ignore":
                    positions[(msg.topic, msg.partition)] = msg.offset + 1
                    result.stats.skipped += 1
                    continue
                value = None
            else:
                data = raw if raw is not None else b""
                try:
                    value = stream.codec.decode(data)
                except Exception as exc:  # a user codec may raise anything: same policy
                    if not isinstance(exc, CodecError):
                        wrapped = decode_error(stream.codec, data, f"{type(exc).__name__}: {exc}")
                        wrapped.__cause__ = exc
                        exc = wrapped
                    if not self._undecodable(stream, msg, key, exc, result):
                        break
                    positions[(msg.topic, msg.partition)] = msg.offset + 1
                    continue
            try:
                stream.callback(Context(self, msg, key, effects), value)
            except Exception as exc:
                effects.context = None
                self._raise_storage_failure()
                if not self._callback_error(stream, msg, key, exc, result):
                    break
                positions[(msg.topic, msg.partition)] = msg.offset + 1
                continue
            if self._storage_failure is not None:
                effects.context = None
                self._raise_storage_failure()
            # the common case, a write without headers well within the limit, needs no check
            write = effects.write
            if effects.emits or (
                write is not None
                and (write.headers is not None or len(write.key) + len(write.value or b"") > room)
            ):
                rejected = self._unproducible(effects)
                if rejected is not None:
                    effects.context = None
                    if not self._rejected(stream, msg, key, rejected, result):
                        break
                    positions[(msg.topic, msg.partition)] = msg.offset + 1
                    continue
            self._take(effects, result)
            positions[(msg.topic, msg.partition)] = msg.offset + 1
            processed += 1
        result.stats.processed += processed
        self._count(result)
        return result

    def _take(self, effects: Effects, result: BatchResult) -> None:
        """Apply what a callback that returned normally did: its table write becomes pending
        (read by later callbacks, coalesced per key), its emits and deferred commits join the
        batch's. Then the record belongs to no Context any more."""
        effects.context = None
        write = effects.write
        if write is not None:
            kb = write.key
            self._pending[kb] = result.table_writes[kb] = write.value
            if write.headers is not None:
                result.table_headers[kb] = write.headers
            elif kb in result.table_headers:
                del result.table_headers[kb]
        if effects.emits:
            result.emits.extend(effects.emits)
        if effects.deferred:
            result.deferred.extend(effects.deferred)

    def _count(self, result: BatchResult) -> None:
        counts = result.stats
        counts.emitted = len(result.emits) - counts.dead_lettered
        counts.table_writes = len(result.table_writes)
        self.stats.add(counts)

    def table_keys(self) -> list[str]:
        """Every key of the group table, pending writes included, sorted by key bytes, as
        lossless text (:func:`~goka_ray.core.keys.decode_key`)."""
        if self.table is None:
            return []
        keys = {k for k, _ in self.table.storage.iterate()}
        for k, v in self._pending.items():
            if v is None:
                keys.discard(k)
            else:
                keys.add(k)
        return [decode_key(k) for k in sorted(keys)]

    def visit(
        self, name: str, meta: Any = None, keys: Iterable[str | bytes] | None = None
    ) -> BatchResult:
        """Run the Visitor ``name`` as ``callback(ctx, meta)`` for each of ``keys`` (str or
        bytes; default: every key of the group table, as :meth:`table_keys`).

        The result is published and committed like a batch's (it has no ``positions``). Call
        it between batches, from the thread that calls :meth:`process`. A raising callback
        stops the visit: ``result.failure`` names the key (topic ``"__visit__"``, offset -1). A
        failing read of a local copy raises :class:`~goka_ray.errors.StorageError` as
        :meth:`process` does.
        """
        visitor = self.graph.visitor(name)
        if visitor is None:
            declared = ", ".join(repr(v.name) for v in self.graph.visitors) or "none"
            raise ConfigError(
                f"group {self.group!r} has no Visitor({name!r}); add Visitor({name!r}, "
                f"callback) to define_group (declared visitors: {declared})"
            )
        result = BatchResult(group=self.group)
        callback = visitor.callback
        effects = self._effects
        now = int(time.time() * 1000)
        visiting = self.table_keys() if keys is None else list(keys)
        for kb in [encode_key(key, f"visit({name!r})") for key in visiting]:
            msg = InputMessage(VISIT_TOPIC, self.partition, -1, kb, None, now, None)
            try:
                callback(Context(self, msg, decode_key(kb), effects), meta)
            except Exception as exc:
                effects.context = None
                self._raise_storage_failure()
                result.failure = self._failure(msg, decode_key(kb), exc)
                break
            if self._storage_failure is not None:
                effects.context = None
                self._raise_storage_failure()
            rejected = self._unproducible(effects)
            if rejected is not None:
                effects.context = None
                result.failure = self._failure(msg, decode_key(kb), rejected)
                break
            self._take(effects, result)
            result.stats.visited += 1
        self._count(result)
        return result

    def _raise_storage_failure(self) -> None:
        """Raise the storage error a callback met, if any (it is not the callback's failure)."""
        failure = self._storage_failure
        if failure is not None:
            self._storage_failure = None
            raise failure

    def _undecodable(
        self,
        stream: StreamEdge,
        msg: InputMessage,
        key: str | None,
        exc: Exception,
        result: BatchResult,
    ) -> bool:
        """Apply the stream's decode-error policy; False means the batch stops (fail)."""
        return self._reject(stream.on_decode_error, "undecodable", msg, key, exc, result)

    def _unproducible(self, effects: Effects) -> RecordRejected | None:
        """The first record of a callback's effects that is too large to produce, if any."""
        limit = self.limit
        write = effects.write
        if write is not None:
            rejected = limit.check(
                "changelog record", self.graph.table_topic, write.key, write.value, write.headers
            )
            if rejected is not None:
                return rejected
        loop = self.graph.loop_topic if self.graph.loop is not None else None
        for out in effects.emits or ():
            what = "loopback" if out.topic == loop else "emit"
            rejected = limit.check(what, out.topic, out.key, out.value, out.headers)
            if rejected is not None:
                return rejected
        return None

    def _rejected(
        self,
        stream: StreamEdge,
        msg: InputMessage,
        key: str | None,
        exc: RecordRejected,
        result: BatchResult,
    ) -> bool:
        """Apply the stream's on_error policy to a message that made a record Kafka refuses;
        False = the batch stops (fail)."""
        if stream.on_error != "fail":
            result.stats.unproducible += 1
        return self._reject(stream.on_error, "produce", msg, key, exc, result)

    def reject(self, msg: InputMessage, error: RecordRejected) -> BatchResult:
        """The result of ``msg`` when a record it made was refused at publishing (by the
        producer or the broker, a limit the core could not check): its input's ``on_error``
        policy applied, as for a raising callback. Publish the result like a batch's. A
        visit's message (topic ``VISIT_TOPIC``) always fails."""
        result = BatchResult(group=self.group)
        stream = self._streams.get(msg.topic)
        key = None if msg.key is None else decode_key(msg.key)
        if stream is None:
            result.failure = self._failure(msg, key, error)
        elif self._rejected(stream, msg, key, error, result):
            result.positions[(msg.topic, msg.partition)] = msg.offset + 1
        self._count(result)
        return result

    def _keyless(self, stream: StreamEdge, msg: InputMessage, result: BatchResult) -> bool:
        """Apply the stream's null-key policy to a message without a key; False = the batch
        stops (fail)."""
        error = GokaRayError(
            f"the message has no key; Input({msg.topic!r}, null_key={stream.null_key!r}) "
            f"does not process keyless messages (give producers a key, or choose another "
            f"null_key policy)"
        )
        if stream.null_key != "fail":
            result.stats.null_keys += 1
        return self._reject(stream.null_key, "null_key", msg, None, error, result)

    def _callback_error(
        self,
        stream: StreamEdge,
        msg: InputMessage,
        key: str | None,
        exc: Exception,
        result: BatchResult,
    ) -> bool:
        """Apply the stream's on_error policy to a raising callback; False = the batch stops.

        ``ctx.fail()`` and context misuse (ContextError: the graph is wrong) always fail.
        """
        policy = stream.on_error
        if isinstance(exc, CallbackFailed | ContextError):
            policy = "fail"
        if policy != "fail":
            result.stats.callback_errors += 1
        return self._reject(policy, "callback", msg, key, exc, result)

    def _reject(
        self,
        policy: str,
        stage: str,
        msg: InputMessage,
        key: str | None,
        exc: Exception,
        result: BatchResult,
    ) -> bool:
        """Fail, skip or dead-letter a message; False means the batch stops (fail)."""
        where = f"{msg.topic}[{msg.partition}]@{msg.offset}"
        what = _REJECTED[stage]
        if policy == "fail":
            result.failure = self._failure(msg, key, exc)
            return False
        if policy == "skip":
            logger.warning("group %s: skipping %s %s: %s", self.group, what, where, readable(exc))
            result.stats.skipped += 1
            return True
        error = readable(exc)
        if stage in ("callback", "produce"):
            error = f"{type(exc).__name__}: {error}"
        headers = list(msg.headers or ())
        headers += [
            ("goka-ray.error", error.encode()),
            ("goka-ray.stage", stage.encode()),
            ("goka-ray.topic", msg.topic.encode()),
            ("goka-ray.partition", str(msg.partition).encode()),
            ("goka-ray.offset", str(msg.offset).encode()),
        ]
        dlq = self.graph.dead_letter_topic
        too_large = self.limit.check("dead letter", dlq, msg.key, msg.value, headers)
        if too_large is not None:  # cannot be dead-lettered either: the partition stops
            result.failure = self._failure(msg, key, too_large)
            return False
        # a keyless message stays at its partition number (a producer would pick one at random)
        partition = msg.partition if msg.key is None else None
        result.emits.append(OutgoingMessage(dlq, msg.key, msg.value, headers, partition))
        result.stats.dead_lettered += 1
        logger.warning("group %s: dead-lettered %s %s: %s", self.group, what, where, error)
        return True

    def _failure(self, msg: InputMessage, key: str | None, exc: Exception) -> ProcessingError:
        cause: BaseException = exc
        if isinstance(exc, CallbackFailed) and exc.__cause__ is not None:
            cause = exc.__cause__
        return ProcessingError(self.group, msg.topic, msg.partition, msg.offset, key, cause)

    def commit(self, result: BatchResult, changelog_offset: int | None = None) -> None:
        """Write a processed batch's table writes (and the changelog offset) atomically.

        Call it once the batch's changelog records are acknowledged. ``changelog_offset`` is the
        next offset of the changelog partition after those records.
        """
        if self.table is None:
            return
        batch = WriteBatch()
        batch.writes = result.table_writes
        batch.offset = changelog_offset
        batch.known, self._stored = self._stored, {}
        self.table.storage.write(batch)
        pending = self._pending
        for key, value in result.table_writes.items():
            # a later, not yet committed batch may have written the key again: keep that
            if key in pending and pending[key] is value:
                del pending[key]

    def discard_pending(self) -> None:
        """Forget uncommitted writes (after a failed publish; the batch will be reprocessed)."""
        self._pending.clear()
        self._stored.clear()

    def discard(self, result: BatchResult) -> None:
        """Forget a batch that was not published: its uncommitted writes and its counts (it
        is processed again, and counted then)."""
        self._pending.clear()
        self._stored.clear()
        self.stats.subtract(result.stats)

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    # -- recovery -----------------------------------------------------------------------------

    def recover(
        self,
        records: Iterable[tuple[bytes | None, bytes | None] | ChangelogRecord],
        next_offset: int,
    ) -> int:
        """Apply changelog records of the group table; returns how many were applied.

        Records go through the ``Persist(update=...)`` callback if the graph gives one.
        """
        if self.table is None:
            raise ContextError(f"group {self.group!r} has no table to recover")
        self._stored.clear()  # the changelog writes the storage: what was read may change
        return self.table.apply_changelog(records, next_offset)

    def recover_join(
        self,
        table: str,
        records: Iterable[tuple[bytes | None, bytes | None] | ChangelogRecord],
        next_offset: int,
    ) -> int:
        """Apply changelog records of a joined table at this partition (through the
        ``Join(update=...)`` callback if the graph gives one)."""
        joined = self.joins.get(table)
        if joined is None:
            declared = ", ".join(repr(t) for t in self.joins) or "none"
            raise ValueError(
                f"group {self.group!r} declares no Join({table!r}) (declared joins: {declared})"
            )
        return joined.apply_changelog(records, next_offset)
