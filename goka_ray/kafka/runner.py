"""PartitionRunner: one partition of a processor group against a real Kafka broker.

It drives the PartitionCore in batches: consume what arrived, run the callbacks, hand the
result to the publisher, commit. No Ray here: the Ray partition actor is a thin shell around
this class. Its parts each live in their own module: the local table copies
(:mod:`goka_ray.kafka.local_tables`), kept current by a changelog follower
(:mod:`goka_ray.kafka.changelog`); the publisher (:mod:`goka_ray.kafka.publish`, chosen once
from ``processing_guarantee``) that makes each batch durable. The runner keeps the batch loop,
visits and the lifecycle.

Order of work for each batch:
  1. apply what arrived of joined and lookup tables (the follower);
  2. take the input messages that have arrived at this partition, up to ``batch_size``
     (waiting only while none has);
  3. run the callbacks (PartitionCore.process);
  4. publish: at-least-once (as Goka) produces the coalesced changelog records and emits,
     waits for their acknowledgement, writes the table batch and the changelog offset to
     LevelDB atomically, and commits the input offsets; exactly-once does the same in one
     Kafka transaction per batch, writing LevelDB after the commit.
A crash anywhere before the offsets are committed re-processes the batch; the table is never
ahead of its changelog.

Invariants: only the thread that calls :meth:`PartitionRunner.run` (or ``recover`` /
``run_once``) touches the consumers, the producer and the storages; other threads call
``status``, ``visit`` and ``stop``. The own table is followed from the changelog only while
the runner does not process (recovering, or waiting for ``go`` as a hand-over or standby);
once it processes, it alone writes its table.

A record Kafka refuses fails its batch without a trace (see the publishers); the runner then
processes the batch again one message at a time, so the message that made the record goes
through its input's ``on_error`` policy.

Local table copies are caches of their changelogs (:mod:`goka_ray.kafka.local_copy`): a copy
found damaged when opened, during recovery or while processing (LocalCopyDamaged), or not of
its changelog at the first recovery, is discarded and rebuilt from the changelog. A batch
whose reads met the damage is abandoned before anything of it is published and processed
again; a batch already published when its LevelDB write failed is in the changelog, so the
rebuilt copy holds it and its offsets are committed as usual.
"""

from __future__ import annotations

import enum
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from goka_ray.core.graph import GroupGraph
from goka_ray.core.keys import decode_key
from goka_ray.core.limits import DEFAULT_MAX_MESSAGE_BYTES, RecordLimit
from goka_ray.core.messages import InputMessage
from goka_ray.core.partition import VISIT_TOPIC, BatchResult, PartitionCore
from goka_ray.core.partitioner import Partitioner, partitioner_named
from goka_ray.core.stats import PartitionStats, StatsFields
from goka_ray.errors import (
    BrokerError,
    FencedError,
    GokaRayError,
    LocalCopyDamaged,
    ProcessingError,
    RecordRejected,
    StorageError,
)
from goka_ray.kafka.changelog import ChangelogFollower
from goka_ray.kafka.clients import consume_available, end_offsets, make_consumer
from goka_ray.kafka.local_tables import LocalTables
from goka_ray.kafka.publish import Publisher, publisher_class

__all__ = ["PartitionRunner", "RunnerConfig", "RunnerState", "RunnerStatus"]

logger = logging.getLogger(__name__)


class RunnerState(enum.StrEnum):
    """Lifecycle of a partition runner."""

    IDLE = "idle"
    RECOVERING = "recovering"
    RECOVERED = "recovered"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True)
class RunnerConfig:
    """Tuning of a partition runner; the defaults suit most workloads."""

    #: most messages handled per batch (one LevelDB write and one changelog flush per batch):
    #: a batch is what has arrived, up to this many; it never waits to fill up
    batch_size: int = 20000
    #: how long the loop waits for a message when none has arrived (seconds); it returns as
    #: soon as one does
    poll_timeout: float = 0.1
    #: the consumers' librdkafka ``fetch.wait.max.ms``: how long the broker may hold a fetch
    #: while it has less than ``fetch_min_bytes`` to return (milliseconds)
    fetch_wait_max_ms: int = 500
    #: the consumers' librdkafka ``fetch.min.bytes``: how much a fetch waits for (bytes)
    fetch_min_bytes: int = 1
    #: most changelog records applied per LevelDB batch during recovery
    recovery_batch_size: int = 20000
    #: where a group with no committed offset starts reading its inputs
    initial_offset: Literal["earliest", "latest"] = "earliest"
    #: at_least_once (as Goka), or exactly_once: each batch's changelog writes, emits and
    #: input offsets in one Kafka transaction, consumers reading ``read_committed``
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    #: the partitioner (by name, see :func:`goka_ray.core.partitioner.partitioner_named`) used
    #: when the runner is not given one
    partitioner: Literal["murmur2", "goka"] = "murmur2"
    #: how long to wait for Kafka to acknowledge a batch's writes before failing
    delivery_timeout: float = 60.0
    #: how often the loop refreshes lag figures (seconds)
    lag_interval: float = 2.0
    #: how long one poll of the changelog waits while a recovered runner waits for ``go``
    #: (hand-over, standby): it follows the changelog meanwhile, so the tail stays short; a
    #: ``go`` is seen at the end of the poll under way, so this is also how late it may be
    follow_interval: float = 0.05
    #: how long a batch waits for its ``ctx.defer_commit()`` callables before the partition
    #: fails (its offsets are committed only once they are all called)
    deferred_timeout: float = 300.0
    #: headers on every changelog record, emit and loopback (under the per-call headers)
    default_headers: Mapping[str, str | bytes] = field(default_factory=dict)
    #: the largest record the group may produce (bytes, key + value + headers + overhead):
    #: the producer's ``message.max.bytes`` unless ``producer_config`` sets that itself. A
    #: message whose callback makes a larger record goes through its input's ``on_error``
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    consumer_config: Mapping[str, Any] = field(default_factory=dict)
    producer_config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def exactly_once(self) -> bool:
        return self.processing_guarantee == "exactly_once"


@dataclass(frozen=True)
class RunnerStatus(StatsFields):
    """A snapshot of a runner, safe to read from any thread: its state, and a copy of the
    partition's :class:`~goka_ray.core.stats.PartitionStats` (whose fields read as
    attributes: ``status.processed``, ``status.offsets``, ...)."""

    group: str
    partition: int
    state: RunnerState
    stats: PartitionStats = field(default_factory=PartitionStats)
    error: str | None = None


class PartitionRunner:
    """Runs partition ``partition`` of ``graph``: recovery, then batched processing.

    Call :meth:`run` (blocking; usually in a thread) and :meth:`stop` from anywhere, or drive
    it step by step with :meth:`recover` and :meth:`run_once`, then :meth:`close`.
    ``fence`` is called before each batch is published and committed; it raises
    :class:`~goka_ray.errors.FencedError` if this runner no longer owns the partition.
    ``epoch`` (the owner's assignment number) is written as a header on changelog records.
    ``partitioner`` defaults to the one ``config.partitioner`` names.
    """

    def __init__(
        self,
        brokers: str,
        graph: GroupGraph,
        partition: int,
        *,
        storage_dir: str | Path,
        config: RunnerConfig | None = None,
        partitioner: Partitioner | None = None,
        fence: Callable[[], None] | None = None,
        epoch: int | None = None,
    ) -> None:
        self.brokers = brokers
        self.graph = graph
        self.group = graph.group
        self.partition = partition
        self.config = config or RunnerConfig()
        self.partitioner = partitioner or partitioner_named(self.config.partitioner)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._state = RunnerState.IDLE
        self._error: BaseException | None = None
        #: the partition's one stats record: the core counts into it, the runner adds the rest
        self._stats = PartitionStats()
        self._positions: dict[tuple[str, int], int] = {}
        #: the inputs' ends (high watermarks) as last fetched, by (topic, partition)
        self._high: dict[tuple[str, int], int] = {}
        self._partition_counts: dict[str, int] = {}
        self._closed = False
        self._fenced = False

        # the guarantee is chosen once: it decides the publisher and what consumers need
        kind = publisher_class(self.config.processing_guarantee)
        self._input_topics = set(graph.stream_topics())
        max_bytes = int(
            self.config.producer_config.get("message.max.bytes", self.config.max_message_bytes)
        )
        consumer_config = {
            "fetch.wait.max.ms": self.config.fetch_wait_max_ms,
            "fetch.min.bytes": self.config.fetch_min_bytes,
            **self.config.consumer_config,
            **kind.CONSUMER_SETTINGS,
        }
        self._consumer = make_consumer(brokers, self.group, config=consumer_config)
        # the tables' copies; the follower keeps them current from their changelogs (the own
        # table while recovering or standing by, joins and lookups throughout)
        self._tables = LocalTables(
            brokers,
            graph,
            partition,
            storage_dir,
            follower=ChangelogFollower(
                brokers,
                group_id=self.group,
                consumer_config=consumer_config,
                batch_size=self.config.recovery_batch_size,
                name=f"group {self.group} partition {partition}",
            ),
            consumer=self._consumer,
            partitioner=self.partitioner,
            partition_count=self._partition_count,
            delivery_timeout=self.config.delivery_timeout,
        )
        self.core = PartitionCore(
            graph,
            partition,
            self._tables.own,
            joins=self._tables.joins,
            default_headers=self.config.default_headers or None,
            limit=RecordLimit(max_bytes, kind.reserved_bytes(self._input_topics)),
            stats=self._stats,
        )
        self._visits: queue.SimpleQueue[_Visit] = queue.SimpleQueue()
        self._publisher: Publisher = kind(
            brokers,
            group=self.group,
            partition=partition,
            table_topic=graph.table_topic,
            consumer=self._consumer,
            partitioner=self.partitioner,
            partition_count=self._partition_count,
            store=self._store,
            discard=self.core.discard,
            stored=self._stored_value,
            fence=fence,
            epoch=epoch,
            producer_config=self.config.producer_config,
            delivery_timeout=self.config.delivery_timeout,
            deferred_timeout=self.config.deferred_timeout,
            max_message_bytes=max_bytes,
            kinds={graph.loop_topic: "loopback", graph.dead_letter_topic: "dead letter"},
        )

    def _store(self, result: BatchResult, changelog_offset: int | None) -> None:
        """Write a published batch to the local table. If the copy turns out damaged, it is
        rebuilt from the changelog, which already holds the batch."""
        try:
            self.core.commit(result, changelog_offset)
        except LocalCopyDamaged as damage:
            self.core.discard_pending()
            self._stats.recovered += self._tables.rebuild(
                damage, reach=changelog_offset, stop=self._stop
            )

    def _stored_value(self, key: bytes) -> bytes | None:
        """The committed value of ``key`` in the group table (what a rollback restores)."""
        table = self.core.table
        return None if table is None else table.storage.get(key)

    # -- state --------------------------------------------------------------------------------

    @property
    def state(self) -> RunnerState:
        return self._state

    @property
    def error(self) -> BaseException | None:
        """What failed the runner, if it failed (a ProcessingError for callback failures)."""
        return self._error

    def status(self) -> RunnerStatus:
        table = self.core.table
        stats = self._stats.copy(
            offsets={t: o for (t, _), o in self._positions.items()},
            lag=self._current_lag(),
            keys=len(table) if table is not None else 0,
        )
        error = None if self._error is None else str(self._error)
        return RunnerStatus(self.group, self.partition, self._state, stats, error)

    # -- recovery -----------------------------------------------------------------------------

    def recover(self) -> int:
        """Bring the table, joined tables and lookup copies up to the end of their changelogs.

        Reads each changelog partition from the offset stored with the local copy until the
        consumer reports the end of the partition (not to a ListOffsets high watermark, which
        some brokers under-report). Safe to call again to catch up a tail. Returns the number
        of records applied by this call.
        """
        if self._state != RunnerState.RECOVERED:  # a tail read after recovery stays recovered
            self._state = RunnerState.RECOVERING
        started = time.monotonic()
        # exactly-once: the own changelog may hold records of aborted transactions on brokers
        # that hand them to read_committed consumers; the publisher's filter leaves them out
        own_filter = self._publisher.recovery_filter(self._committed_inputs)
        applied = self._tables.recover(self.core, self._stop, own_filter=own_filter)
        self._stats.recovered += applied
        self._stats.aborted_skipped = self._tables.follower.filtered
        logger.log(
            logging.INFO if applied else logging.DEBUG,
            "group %s partition %d recovered %d records in %.2fs",
            self.group,
            self.partition,
            applied,
            time.monotonic() - started,
        )
        return applied

    def _committed_inputs(self) -> dict[str, int]:
        """The group's committed offset of each input topic at this partition (-1: none)."""
        inputs = [TopicPartition(t, self.partition) for t in sorted(self._input_topics)]
        if not inputs:
            return {}
        try:
            committed = self._consumer.committed(inputs, timeout=10)
        except KafkaException as exc:
            raise BrokerError(
                f"cannot read the committed offsets of group {self.group!r} at "
                f"{self.brokers}: {exc}"
            ) from exc
        return {tp.topic: tp.offset if tp.offset >= 0 else -1 for tp in committed}

    def _raise_kafka_error(self, err: KafkaError, during: str) -> None:
        if err.fatal():
            raise BrokerError(f"Kafka error during {during} at {self.brokers}: {err}")
        logger.warning(
            "group %s partition %d: Kafka error during %s: %s",
            self.group,
            self.partition,
            during,
            err,
        )

    def _partition_count(self, topic: str) -> int:
        count = self._partition_counts.get(topic)
        if count is None:
            md = self._consumer.list_topics(topic, timeout=10)
            meta = md.topics.get(topic)
            if meta is None or meta.error is not None or not meta.partitions:
                raise BrokerError(f"topic {topic!r} not found at {self.brokers}")
            count = self._partition_counts[topic] = len(meta.partitions)
        return count

    # -- processing ---------------------------------------------------------------------------

    def start_processing(self) -> None:
        """Assign inputs at their committed offsets and the table topics at their positions.

        Under exactly-once this first initialises the producer's transactions, which fences
        any previous owner of the partition and ends the transaction it left open, and then
        recovers the changelog tail that owner committed.

        An input the group has no committed offset for starts at ``initial_offset``:
        ``earliest``, or ``latest`` (its end now, read from a fetch, and committed at once so a
        restart before the first batch does not skip what arrived meanwhile).
        """
        if self._publisher.start():
            self.recover()  # what the fenced owner committed last
        consumer = self._consumer
        inputs = [TopicPartition(t, self.partition) for t in sorted(self._input_topics)]
        committed = consumer.committed(inputs, timeout=10) if inputs else []
        for tp in committed:
            if tp.error is not None:
                raise BrokerError(
                    f"cannot read committed offsets of group {self.group!r}: {tp.error}"
                )
        fresh = [(tp.topic, tp.partition) for tp in committed if tp.offset < 0]
        starts: dict[tuple[str, int], int] = {}
        if fresh and self.config.initial_offset == "latest":
            starts = end_offsets(consumer, fresh)
            self._publisher.commit_offsets(starts)
        assignment = []
        for tp in committed:
            key = (tp.topic, tp.partition)
            offset = tp.offset if tp.offset >= 0 else starts.get(key, OFFSET_BEGINNING)
            assignment.append(TopicPartition(tp.topic, tp.partition, offset))
            if offset >= 0:
                self._positions[key] = offset
        consumer.assign(assignment)
        # from now on this runner writes its own table; joined and lookup tables stay followed
        self._tables.stop_following_own()
        self._state = RunnerState.RUNNING

    def run_once(self) -> int:
        """Consume, process, publish and commit one batch; returns the input messages handled.

        Visits requested with :meth:`visit` run first, between batches.
        """
        self._run_visits()
        # joined and lookup tables: apply what arrived (a damaged copy is rebuilt)
        self._tables.poll(0)
        msgs = consume_available(self._consumer, self.config.batch_size, self.config.poll_timeout)
        inputs, starts = self._inputs(msgs)
        if not inputs:
            return 0
        try:
            result = self.core.process(inputs)
        except LocalCopyDamaged as damage:
            # nothing of the batch is published: rebuild the copy, process the batch again
            self.core.discard_pending()
            self._stats.recovered += self._tables.rebuild(damage, stop=self._stop)
            self._rewind(starts)
            return 0
        try:
            published = self._publisher.publish(result, starts)
        except RecordRejected as rejected:
            logger.warning(
                "group %s partition %d: %s; processing the batch message by message to find "
                "the input that made the record",
                self.group,
                self.partition,
                rejected,
            )
            return self._one_by_one(inputs)
        if not published:
            self._rewind(starts)  # an aborted transaction: the batch is processed again
            return 0
        self._positions.update(result.positions)
        if result.failure is not None:
            raise result.failure
        return len(inputs)

    def _inputs(self, msgs: list[Any]) -> tuple[list[InputMessage], dict[str, int]]:
        """The input messages of a poll, and the first offset of each topic among them.

        The hot path: one pass, one InputMessage per message (errors are rare).
        """
        inputs: list[InputMessage] = []
        starts: dict[str, int] = {}
        append = inputs.append
        message = InputMessage
        for m in msgs:
            if m.error() is not None:
                err = m.error()
                if err.code() != KafkaError._PARTITION_EOF:
                    self._raise_kafka_error(err, "processing")
                continue
            topic = m.topic()
            offset = m.offset()
            if topic not in starts:
                starts[topic] = offset
            append(
                message(
                    topic,
                    m.partition(),
                    offset,
                    m.key(),
                    m.value(),
                    m.timestamp()[1],
                    m.headers(),
                )
            )
        return inputs, starts

    def _one_by_one(self, inputs: list[InputMessage]) -> int:
        """Process and publish a batch whose records Kafka refused one message at a time
        (nothing of it was stored or committed), so the refusal is attributed to the message
        that made the record: that message goes through its input's ``on_error`` policy."""
        for i, msg in enumerate(inputs):
            try:
                result = self.core.process([msg])
            except LocalCopyDamaged as damage:  # as in run_once: rebuild, go on from here
                self.core.discard_pending()
                self._stats.recovered += self._tables.rebuild(damage, stop=self._stop)
                self._rewind(_first_offsets(inputs[i:]))
                return i
            try:
                published = self._publisher.publish(result, {msg.topic: msg.offset})
            except RecordRejected as rejected:
                result = self.core.reject(msg, rejected)
                try:
                    published = self._publisher.publish(result, {msg.topic: msg.offset})
                except RecordRejected as again:  # e.g. the dead letter refused too
                    key = None if msg.key is None else decode_key(msg.key)
                    raise ProcessingError(
                        self.group, msg.topic, msg.partition, msg.offset, key, again
                    ) from again
            if not published:  # an aborted transaction: go on from this message next time
                self._rewind(_first_offsets(inputs[i:]))
                return i
            self._positions.update(result.positions)
            if result.failure is not None:
                raise result.failure
        return len(inputs)

    def _rewind(self, starts: Mapping[str, int]) -> None:
        """Seek the inputs back to a batch's first offsets (after its transaction aborted)."""
        for topic, offset in starts.items():
            try:
                self._consumer.seek(TopicPartition(topic, self.partition, offset))
            except KafkaException as exc:
                raise BrokerError(
                    f"group {self.group} partition {self.partition}: cannot go back to "
                    f"{topic}@{offset} after an aborted transaction: {exc}"
                ) from exc

    # -- visits -------------------------------------------------------------------------------

    def visit(self, name: str, meta: Any = None, *, timeout: float | None = None) -> int:
        """Run the group's ``Visitor(name)`` over every key of this partition's table.

        Thread-safe: the visit runs on the processing thread between two batches, and its
        writes and emits are published like a batch's (in one transaction under
        exactly-once). Returns the number of keys visited. A failing visitor callback fails
        the partition and is raised here too; ConfigError if the group has no such visitor;
        TimeoutError if it did not finish within ``timeout`` seconds.
        """
        if self._closed or self._state in (RunnerState.FAILED, RunnerState.STOPPED):
            raise GokaRayError(
                f"group {self.group} partition {self.partition} is {self._state.value}; "
                f"visit a running group"
            )
        request = _Visit(name, meta)
        self._visits.put(request)
        return request.future.result(timeout)

    def _run_visits(self) -> None:
        while True:
            try:
                request = self._visits.get_nowait()
            except queue.Empty:
                return
            if not request.future.set_running_or_notify_cancel():
                continue
            try:
                visited = self._visit_now(request)
            except LocalCopyDamaged as damage:
                # the visit read a damaged copy before publishing anything: it fails, the
                # copy is rebuilt and the partition goes on (the caller may visit again)
                request.future.set_exception(damage)
                self.core.discard_pending()
                self._stats.recovered += self._tables.rebuild(damage, stop=self._stop)
                continue
            except BaseException as exc:
                request.future.set_exception(exc)
                if isinstance(exc, GokaRayError) and not isinstance(
                    exc, ProcessingError | FencedError | BrokerError | StorageError
                ):
                    continue  # the caller's mistake (no such visitor): the partition goes on
                raise
            request.future.set_result(visited)

    def _visit_now(self, request: _Visit) -> int:
        while True:
            result = self.core.visit(request.name, request.meta)
            try:
                if self._publisher.publish(result, {}):
                    break  # else aborted: visit again (MAX_ABORTS in a row fail the runner)
            except RecordRejected as rejected:  # as a record the core refused: the visit fails
                raise ProcessingError(
                    self.group, VISIT_TOPIC, self.partition, -1, rejected.key, rejected
                ) from rejected
        if result.failure is not None:
            raise result.failure
        return result.visited

    def _fail_visits(self) -> None:
        while True:
            try:
                request = self._visits.get_nowait()
            except queue.Empty:
                return
            request.future.set_exception(
                GokaRayError(
                    f"group {self.group} partition {self.partition} stopped before visit "
                    f"{request.name!r} ran; visit again once the group runs"
                )
            )

    def _refresh_lag(self) -> None:
        """Take the inputs' ends from the consumer's last fetch responses (no request)."""
        for topic, part in list(self._positions):
            try:
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, part), cached=True
                )
            except Exception:  # no fetch response seen yet
                continue
            if high >= 0:
                self._high[(topic, part)] = high

    def _current_lag(self) -> dict[str, int]:
        """Messages behind each input's end: the last known end less the position now (so
        the lag and the offsets of one status agree, between refreshes of the ends too)."""
        lag: dict[str, int] = {}
        for (topic, part), position in list(self._positions.items()):
            high = self._high.get((topic, part))
            if high is not None:
                lag[topic] = max(0, high - position)
        return lag

    # -- whole life ---------------------------------------------------------------------------

    def run(
        self,
        go: threading.Event | None = None,
        on_state: Callable[[RunnerState], None] | None = None,
    ) -> None:
        """Recover, then process until :meth:`stop`; closes everything on the way out.

        With ``go``, the runner recovers, then waits (state ``recovered``) until ``go`` is set
        (a hand-over: the previous owner stops meanwhile), catches up the changelog tail the
        previous owner wrote, and only then processes.
        ``on_state`` is called with the state when the runner starts to wait for ``go``
        (``recovered``) and when it starts processing (``running``), in the runner's thread;
        its errors are logged, never raised.
        Raises the error that failed the runner (ProcessingError for a callback failure).
        """
        try:
            self.recover()
            if go is not None:
                # waiting for the hand-over (or a standby waiting to be promoted): keep
                # following the changelog, so the tail left to read after ``go`` stays short
                self._state = RunnerState.RECOVERED
                self._tell(on_state)
                while not go.is_set():
                    if self._stop.is_set():
                        return
                    self._stats.recovered += self._tables.poll(self.config.follow_interval)
                self.recover()
            if self._stop.is_set():
                return
            self.start_processing()
            self._tell(on_state)
            last_lag = 0.0
            while not self._stop.is_set():
                self.run_once()
                now = time.monotonic()
                if now - last_lag > self.config.lag_interval:
                    last_lag = now
                    self._refresh_lag()
        except FencedError:
            self._fenced = self._publisher.fenced = True
            logger.warning(
                "group %s partition %d: another owner took over; stopping without writing",
                self.group,
                self.partition,
            )
        except BaseException as exc:
            self._error = exc
            self._state = RunnerState.FAILED
            if isinstance(exc, ProcessingError):
                logger.error("group %s partition %d failed: %s", self.group, self.partition, exc)
            else:
                logger.exception("group %s partition %d failed", self.group, self.partition)
            raise
        finally:
            self.close()

    def _tell(self, on_state: Callable[[RunnerState], None] | None) -> None:
        if on_state is None:
            return
        try:
            on_state(self._state)
        except Exception:
            logger.warning(
                "group %s partition %d: the state callback failed",
                self.group,
                self.partition,
                exc_info=True,
            )

    def stop(self) -> None:
        """Ask :meth:`run` to finish the current batch and stop (thread-safe, idempotent)."""
        self._stop.set()

    def close(self) -> None:
        """Flush and commit what is done, and release the consumer, producer and storage."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._state != RunnerState.FAILED:
                self._state = RunnerState.STOPPING
            try:
                self._publisher.close(self._positions)
            except FencedError as exc:
                self._fenced = self._publisher.fenced = True
                logger.warning(
                    "group %s partition %d: no final commit, the lease is gone (%s); the next "
                    "owner processes from the last committed offsets",
                    self.group,
                    self.partition,
                    exc,
                )
            except Exception as exc:  # closing must go on; the offsets will be re-processed
                logger.warning(
                    "group %s partition %d: final commit failed: %s",
                    self.group,
                    self.partition,
                    exc,
                )
            finally:
                self._fail_visits()
                self._consumer.close()
                self._tables.close()
                if self._state != RunnerState.FAILED:
                    self._state = RunnerState.STOPPED


class _Visit:
    """A visit requested from another thread, run by the processing thread."""

    __slots__ = ("future", "meta", "name")

    def __init__(self, name: str, meta: Any) -> None:
        self.name = name
        self.meta = meta
        self.future: Future[int] = Future()


def _first_offsets(inputs: Iterable[InputMessage]) -> dict[str, int]:
    """The first offset of each topic among ``inputs`` (where to go back to)."""
    firsts: dict[str, int] = {}
    for m in inputs:
        firsts.setdefault(m.topic, m.offset)
    return firsts


def run_partitions(runners: Iterable[PartitionRunner]) -> list[threading.Thread]:
    """Start each runner's :meth:`~PartitionRunner.run` in a daemon thread."""
    threads = []
    for r in runners:
        t = threading.Thread(
            target=_run_quietly, args=(r,), daemon=True, name=f"goka-ray-{r.group}-{r.partition}"
        )
        t.start()
        threads.append(t)
    return threads


def _run_quietly(runner: PartitionRunner) -> None:
    try:
        runner.run()
    except BaseException:  # recorded in runner.error and state; the thread just ends
        pass
