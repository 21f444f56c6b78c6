"""PartitionRunner: one partition of a processor group against a real Kafka broker.

It owns the partition's LevelDB table, one consumer and one producer, and drives the
PartitionCore. No Ray here: the Ray partition actor is a thin shell around this class.

Order of work for each batch (at-least-once, as Goka):
  1. consume up to ``batch_size`` messages (inputs at this partition, joined tables at this
     partition, lookup tables at all partitions);
  2. apply joined/lookup table updates to their local copies;
  3. run the callbacks (PartitionCore.process);
  4. produce the coalesced changelog records and the emits, and wait until Kafka acknowledges
     all of them;
  5. write the table batch and the changelog offset reached to LevelDB, atomically;
  6. commit the input offsets.
A crash anywhere before 6 re-processes the batch; the table is never ahead of its changelog.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, KafkaError, TopicPartition

from goka_ray.errors import BrokerError, FencedError, ProcessingError
from goka_ray.graph import GroupGraph
from goka_ray.kafka import caught_up, make_consumer, make_producer
from goka_ray.messages import InputMessage, OutgoingMessage
from goka_ray.partition import BatchResult, PartitionCore
from goka_ray.partitioner import MURMUR2, Partitioner
from goka_ray.storage import LevelDBStorage, Storage, partition_dir
from goka_ray.tables import PartitionedTable, TablePartition

__all__ = ["PartitionRunner", "RunnerConfig", "RunnerState", "RunnerStatus"]

logger = logging.getLogger(__name__)

_OFFSET_INVALID = -1001


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

    #: most messages handled per batch (one LevelDB write and one changelog flush per batch)
    batch_size: int = 5000
    #: how long one poll waits for messages
    poll_timeout: float = 0.1
    #: most changelog records applied per LevelDB batch during recovery
    recovery_batch_size: int = 20000
    #: where a group with no committed offset starts reading its inputs
    initial_offset: Literal["earliest", "latest"] = "earliest"
    #: how long to wait for Kafka to acknowledge a batch's writes before failing
    delivery_timeout: float = 60.0
    #: how often the loop refreshes lag figures (seconds)
    lag_interval: float = 2.0
    consumer_config: Mapping[str, Any] = field(default_factory=dict)
    producer_config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunnerStatus:
    """A snapshot of a runner, safe to read from any thread."""

    group: str
    partition: int
    state: RunnerState
    #: next offset to process per input topic
    offsets: dict[str, int]
    #: messages behind the end of each input topic (from the last fetch's high watermark)
    lag: dict[str, int]
    keys: int
    processed: int
    skipped: int
    dead_lettered: int
    emitted: int
    recovered: int
    error: str | None = None


Records = list[tuple[bytes | None, bytes | None]]


class PartitionRunner:
    """Runs partition ``partition`` of ``graph``: recovery, then batched processing.

    Call :meth:`run` (blocking; usually in a thread) and :meth:`stop` from anywhere, or drive
    it step by step with :meth:`recover` and :meth:`run_once`, then :meth:`close`.
    ``fence`` is called before each batch is published and committed; it raises
    :class:`~goka_ray.errors.FencedError` if this runner no longer owns the partition.
    ``epoch`` (the owner's assignment number) is written as a header on changelog records.
    """

    def __init__(
        self,
        brokers: str,
        graph: GroupGraph,
        partition: int,
        *,
        storage_dir: str | Path,
        config: RunnerConfig | None = None,
        partitioner: Partitioner = MURMUR2,
        fence: Callable[[], None] | None = None,
        epoch: int | None = None,
    ) -> None:
        self.brokers = brokers
        self.graph = graph
        self.group = graph.group
        self.partition = partition
        self.config = config or RunnerConfig()
        self.partitioner = partitioner
        self._fence = fence
        # changelog records carry the writer's epoch: who wrote what stays visible
        self._changelog_headers = (
            None if epoch is None else [("goka-ray.epoch", str(epoch).encode())]
        )
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._state = RunnerState.IDLE
        self._error: BaseException | None = None
        self._recovered = 0
        self._positions: dict[tuple[str, int], int] = {}
        self._lag: dict[str, int] = {}
        self._partition_counts: dict[str, int] = {}
        self._tables: dict[tuple[str, int], TablePartition] = {}
        self._closed = False
        self._fenced = False

        base = Path(storage_dir)
        self._storages: list[Storage] = []
        table_storage = None
        if graph.persist is not None:
            table_storage = self._open(
                partition_dir(base, self.group, graph.table_topic, partition)
            )
        joins = {
            j.table: self._open(partition_dir(base, self.group, j.table, partition))
            for j in graph.joins
        }
        self.core = PartitionCore(graph, partition, table_storage, joins=joins)
        self._lookup_codecs = {lk.table: lk.codec for lk in graph.lookups}

        consumer_config = dict(self.config.consumer_config)
        self._consumer = make_consumer(brokers, self.group, config=consumer_config)
        self._producer = make_producer(
            brokers, partitioner=partitioner, config=self.config.producer_config
        )
        self._lookup_dir = base / self.group / f"lookups-of-{partition:04d}"
        self._input_topics = set(graph.stream_topics())

    def _open(self, path: Path) -> LevelDBStorage:
        storage = LevelDBStorage(path)
        self._storages.append(storage)
        return storage

    # -- state --------------------------------------------------------------------------------

    @property
    def state(self) -> RunnerState:
        return self._state

    @property
    def error(self) -> BaseException | None:
        """What failed the runner, if it failed (a ProcessingError for callback failures)."""
        return self._error

    def status(self) -> RunnerStatus:
        stats = self.core.stats
        table = self.core.table
        return RunnerStatus(
            group=self.group,
            partition=self.partition,
            state=self._state,
            offsets={t: o for (t, _), o in self._positions.items()},
            lag=dict(self._lag),
            keys=len(table) if table is not None else 0,
            processed=stats.processed,
            skipped=stats.skipped,
            dead_lettered=stats.dead_lettered,
            emitted=stats.emitted,
            recovered=self._recovered,
            error=None if self._error is None else str(self._error),
        )

    # -- recovery -----------------------------------------------------------------------------

    def recover(self) -> int:
        """Bring the table, joined tables and lookup copies up to the end of their changelogs.

        Reads each changelog partition from the offset stored with the local copy until the
        consumer reports the end of the partition (not to a ListOffsets high watermark, which
        some brokers under-report). Safe to call again to catch up a tail. Returns the number
        of records applied by this call.
        """
        self._state = RunnerState.RECOVERING
        started = time.monotonic()
        if not self._tables:
            self._open_tables()
        starts = [
            TopicPartition(topic, part, OFFSET_BEGINNING if t.offset is None else t.offset)
            for (topic, part), t in self._tables.items()
        ]
        applied = self._read_to_end(starts) if starts else 0
        logger.info(
            "group %s partition %d recovered %d records in %.2fs",
            self.group,
            self.partition,
            applied,
            time.monotonic() - started,
        )
        return applied

    def _open_tables(self) -> None:
        """Collect every table partition this runner keeps: own, joined, lookup copies."""
        tables = self._tables
        if self.core.table is not None:
            tables[(self.graph.table_topic, self.partition)] = self.core.table
        for topic, joined in self.core.joins.items():
            tables[(topic, self.partition)] = joined
        for topic, codec in self._lookup_codecs.items():
            parts = [
                TablePartition(topic, q, self._open(self._lookup_dir / topic / f"{q:04d}"), codec)
                for q in range(self._partition_count(topic))
            ]
            for part in parts:
                tables[(topic, part.partition)] = part
            lookup = PartitionedTable(topic, [p.storage for p in parts], self.partitioner)
            self.core.connect_lookup(topic, lookup)

    def _read_to_end(self, starts: list[TopicPartition]) -> int:
        consumer = self._consumer
        consumer.assign(starts)
        remaining = {(tp.topic, tp.partition) for tp in starts}
        position: dict[tuple[str, int], int | None] = {
            (tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None) for tp in starts
        }
        applied = 0
        batch = self.config.recovery_batch_size
        last_log = time.monotonic()
        while remaining:
            if self._stop.is_set():
                break
            buffers: dict[tuple[str, int], Records] = {}
            for m in consumer.consume(batch, timeout=0.5):
                err = m.error()
                tp = (m.topic(), m.partition())
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        remaining.discard(tp)
                        continue
                    self._raise_kafka_error(err, "recovery")
                    continue
                buf = buffers.get(tp)
                if buf is None:
                    buf = buffers[tp] = []
                buf.append((m.key(), m.value()))
                position[tp] = m.offset() + 1
            for tp, records in buffers.items():
                n = self._tables[tp].apply_changelog(records, position[tp])  # type: ignore[arg-type]
                applied += n
                self._recovered += n
            for tp in list(remaining):
                if caught_up(consumer, tp[0], tp[1], position[tp]):
                    remaining.discard(tp)
            if time.monotonic() - last_log > 5:
                last_log = time.monotonic()
                logger.info(
                    "group %s partition %d recovering: %d records so far, %d partitions to go",
                    self.group,
                    self.partition,
                    applied,
                    len(remaining),
                )
        consumer.unassign()
        return applied

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
        """Assign inputs at their committed offsets and the table topics at their positions."""
        consumer = self._consumer
        inputs = [TopicPartition(t, self.partition) for t in sorted(self._input_topics)]
        committed = consumer.committed(inputs, timeout=10) if inputs else []
        initial = OFFSET_BEGINNING if self.config.initial_offset == "earliest" else OFFSET_END
        assignment = []
        for tp in committed:
            if tp.error is not None:
                raise BrokerError(
                    f"cannot read committed offsets of group {self.group!r}: {tp.error}"
                )
            offset = tp.offset if tp.offset >= 0 else initial
            assignment.append(TopicPartition(tp.topic, tp.partition, offset))
            if tp.offset >= 0:
                self._positions[(tp.topic, tp.partition)] = tp.offset
        # keep joined and lookup tables current while processing
        for (topic, part), t in self._tables.items():
            if topic != self.graph.table_topic:
                offset = OFFSET_BEGINNING if t.offset is None else t.offset
                assignment.append(TopicPartition(topic, part, offset))
        consumer.assign(assignment)
        self._state = RunnerState.RUNNING

    def run_once(self) -> int:
        """Consume, process, publish and commit one batch; returns the input messages handled."""
        msgs = self._consumer.consume(self.config.batch_size, timeout=self.config.poll_timeout)
        if not msgs:
            return 0
        inputs: list[InputMessage] = []
        tables: dict[tuple[str, int], Records] = {}
        table_next: dict[tuple[str, int], int] = {}
        input_topics = self._input_topics
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    self._raise_kafka_error(err, "processing")
                continue
            topic = m.topic()
            if topic in input_topics:
                inputs.append(
                    InputMessage(
                        topic,
                        m.partition(),
                        m.offset(),
                        m.key(),
                        m.value(),
                        m.timestamp()[1],
                        m.headers(),
                    )
                )
            else:
                tp = (topic, m.partition())
                tables.setdefault(tp, []).append((m.key(), m.value()))
                table_next[tp] = m.offset() + 1
        for tp, records in tables.items():
            self._tables[tp].apply_changelog(records, table_next[tp])
        if not inputs:
            return 0
        result = self.core.process(inputs)
        self._publish_and_commit(result)
        if result.failure is not None:
            raise result.failure
        return len(inputs)

    def _publish_and_commit(self, result: BatchResult) -> None:
        if self._fence is not None:
            self._fence()
        producer = self._producer
        delivered: list[int] = []
        errors: list[KafkaError] = []
        table_topic = self.graph.table_topic
        partition = self.partition

        def on_changelog(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                errors.append(err)
            else:
                delivered.append(msg.offset())

        def on_emit(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                errors.append(err)

        for key, value in result.table_writes.items():
            self._produce(table_topic, key, value, self._changelog_headers, partition, on_changelog)
        for out in result.emits:
            self._produce(out.topic, out.key, out.value, out.headers, self._target(out), on_emit)
        if result.table_writes or result.emits:
            remaining = producer.flush(self.config.delivery_timeout)
            if remaining or errors:
                self.core.discard_pending()
                problem = errors[0] if errors else f"{remaining} messages not acknowledged"
                raise BrokerError(
                    f"group {self.group} partition {partition}: Kafka did not acknowledge the "
                    f"batch's writes within {self.config.delivery_timeout}s: {problem}; the batch "
                    f"will be processed again after a restart"
                )
        self.core.commit(result, max(delivered) + 1 if delivered else None)
        if result.positions:
            if self._fence is not None:
                self._fence()
            self._positions.update(result.positions)
            self._consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in result.positions.items()],
                asynchronous=True,
            )

    def _target(self, out: OutgoingMessage) -> int | None:
        if out.partition is not None or self.partitioner.librdkafka_name is not None:
            return out.partition
        # the partitioner is not one librdkafka knows: choose the partition here
        return self.partitioner.partition(out.key or b"", self._partition_count(out.topic))

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Any,
        partition: int | None,
        callback: Callable[[KafkaError | None, Any], None],
    ) -> None:
        kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": callback}
        if headers:
            kwargs["headers"] = headers
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self._producer.produce(topic, **kwargs)
                return
            except BufferError:
                self._producer.poll(0.05)  # local queue full: let deliveries drain

    def _refresh_lag(self) -> None:
        lag: dict[str, int] = {}
        for (topic, part), position in self._positions.items():
            try:
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, part), cached=True
                )
            except Exception:  # no fetch response seen yet
                continue
            if high >= 0:
                lag[topic] = max(0, high - position)
        self._lag = lag

    # -- whole life ---------------------------------------------------------------------------

    def run(self, go: threading.Event | None = None) -> None:
        """Recover, then process until :meth:`stop`; closes everything on the way out.

        With ``go``, the runner recovers, then waits (state ``recovered``) until ``go`` is set
        (a hand-over: the previous owner stops meanwhile), catches up the changelog tail the
        previous owner wrote, and only then processes.
        Raises the error that failed the runner (ProcessingError for a callback failure).
        """
        try:
            self.recover()
            if go is not None:
                self._state = RunnerState.RECOVERED
                while not go.wait(0.1):
                    if self._stop.is_set():
                        return
                self.recover()
            if self._stop.is_set():
                return
            self.start_processing()
            last_lag = 0.0
            while not self._stop.is_set():
                self.run_once()
                now = time.monotonic()
                if now - last_lag > self.config.lag_interval:
                    last_lag = now
                    self._refresh_lag()
        except FencedError:
            self._fenced = True
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
                self._producer.flush(self.config.delivery_timeout)
                # positions only ever cover fully published messages, so committing them is
                # right even after a callback failure; a fenced runner leaves it to the new owner
                if self._positions and not self._fenced:
                    self._consumer.commit(
                        offsets=[TopicPartition(t, p, o) for (t, p), o in self._positions.items()],
                        asynchronous=False,
                    )
            except Exception as exc:  # closing must go on; the offsets will be re-processed
                logger.warning(
                    "group %s partition %d: final commit failed: %s",
                    self.group,
                    self.partition,
                    exc,
                )
            finally:
                self._consumer.close()
                for storage in self._storages:
                    storage.close()
                if self._state != RunnerState.FAILED:
                    self._state = RunnerState.STOPPED


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
