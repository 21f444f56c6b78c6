"""Publishers: how a processed batch becomes durable, chosen once per partition runner.

A batch's effects are its coalesced changelog records, its emits, loopbacks and dead letters,
its table writes (to the local copy) and its input offsets. A publisher makes them durable in
an order that never lets the local table run ahead of its changelog, nor the offsets ahead of
the effects:

- :class:`AtLeastOncePublisher` (Goka's guarantee): produce, wait until Kafka acknowledged
  every record, write the local table and the changelog offset reached (one atomic batch),
  wait for the batch's deferred commits, commit the input offsets.
- :class:`TransactionalPublisher` (``processing_guarantee="exactly_once"``, Goka #321): one
  Kafka transaction per batch holds the records and the input offsets; the local table is
  written only after the commit. ``transactional.id`` is derived from group and partition
  (:func:`transactional_id`), so a new owner's ``init_transactions`` fences a zombie.

Invariants:

- ``fence()`` is called before anything of a batch is produced and again before its offsets
  are committed; once it raised, or the broker fenced the producer, the publisher writes
  nothing more (:attr:`Publisher.fenced`).
- The local table is written (``store``) only after Kafka acknowledged (at-least-once) or
  committed (exactly-once) the batch's changelog records.
- A batch that fails is never flushed afterwards: the producer's queue is purged
  (at-least-once) or the transaction aborted (exactly-once). Closing purges what is left.
- A record the producer or the broker refuses (too large, unknown or invalid topic, not
  authorised, ...: :data:`RECORD_ERRORS`) fails the whole batch that way and raises
  :class:`~goka_ray.errors.RecordRejected` naming the record; the runner then finds the input
  message that made it and applies its ``on_error`` policy. Any other failure to publish is
  the broker's (BrokerError, or an aborted transaction processed again).
- Only the thread that drives the runner calls a publisher.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from goka_ray.core.limits import (
    DEFAULT_MAX_MESSAGE_BYTES,
    EPOCH_HEADER_BYTES,
    header_bytes,
    record_size,
)
from goka_ray.core.messages import Headers, OutgoingMessage
from goka_ray.core.partition import BatchResult
from goka_ray.core.partitioner import Partitioner
from goka_ray.errors import BrokerError, FencedError, ProcessingError, RecordRejected
from goka_ray.kafka.changelog import RecordFilter
from goka_ray.kafka.clients import make_producer
from goka_ray.kafka.epochs import EPOCH_HEADER

__all__ = [
    "MAX_ABORTS",
    "RECORD_ERRORS",
    "ROLLBACK_HEADER",
    "TXN_HEADER",
    "TXN_ID_HEADER",
    "AtLeastOncePublisher",
    "Publisher",
    "TransactionalPublisher",
    "publisher_class",
    "transactional_id",
]

logger = logging.getLogger(__name__)

#: header on every record written in an exactly-once transaction: the input offsets the
#: batch consumed, ``<topic>=<first>-<next>`` per input topic, comma separated
TXN_HEADER = "goka-ray.txn"
#: header naming the transaction itself, unique per transaction: ``<runner id>-<number>``
TXN_ID_HEADER = "goka-ray.txn-id"
#: header on the changelog records that roll back a batch Kafka refused part of
ROLLBACK_HEADER = "goka-ray.rollback"
#: aborted transactions in a row (each batch retried from its first offset) before failing
MAX_ABORTS = 3
#: librdkafka error codes meaning "another producer with this transactional.id took over"
_FENCED_CODES = {
    KafkaError._FENCED,
    KafkaError.PRODUCER_FENCED,
    KafkaError.INVALID_PRODUCER_EPOCH,
}

#: errors that refuse one record (not the broker failing): the input message that made the
#: record goes through its on_error policy
RECORD_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG,
        KafkaError.TOPIC_EXCEPTION,  # an invalid topic name
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.POLICY_VIOLATION,
        KafkaError.UNKNOWN_TOPIC_OR_PART,  # final once topic.metadata.propagation.max.ms passed
        KafkaError._UNKNOWN_TOPIC,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError._INVALID_ARG,
    }
)

Offsets = Mapping[tuple[str, int], int]


class _Refused:
    """A record Kafka refused, as its delivery report (or produce call) told."""

    __slots__ = ("error", "key", "kind", "size", "topic")

    def __init__(
        self, kind: str, topic: str, key: bytes | None, size: int, error: KafkaError
    ) -> None:
        self.kind, self.topic, self.key, self.size, self.error = kind, topic, key, size, error


#: the kind of a changelog record (the one kind whose acknowledged offsets are collected)
_CHANGELOG = "changelog record"


class _Unsent:
    """A record the producer refused at once, shaped like a delivery report's message."""

    __slots__ = ("_key", "_topic", "_value")

    def __init__(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        self._topic, self._key, self._value = topic, key, value

    def topic(self) -> str:
        return self._topic

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value


def transactional_id(group: str, partition: int) -> str:
    """The ``transactional.id`` of a partition's producer under exactly-once.

    One per group and partition, stable across restarts and hosts: whoever owns the
    partition next fences the previous owner by initialising transactions under it.
    """
    return f"goka-ray.{group}.{partition}"


class Publisher(Protocol):
    """Makes processed batches durable (see the module docstring for the order of work)."""

    #: librdkafka settings this guarantee needs on every consumer of the runner
    CONSUMER_SETTINGS: ClassVar[Mapping[str, Any]]
    #: another owner took over: nothing more may be written
    fenced: bool

    def start(self) -> bool:
        """Prepare before the first batch. True if a previous owner was fenced just now (its
        last committed changelog records are then to be recovered before processing)."""

    def publish(self, result: BatchResult, starts: Mapping[str, int]) -> bool:
        """Publish and commit one batch (``starts``: its first input offset per topic).

        Returns False if the batch must be processed again from ``starts`` (an aborted
        transaction); raises FencedError, ProcessingError (a deferred commit failed) or
        BrokerError.
        """

    def commit_offsets(self, offsets: Offsets) -> None:
        """Commit input offsets outside a batch (a new group's starting point)."""

    def recovery_filter(self, committed: Callable[[], dict[str, int]]) -> RecordFilter | None:
        """Which records of the own changelog recovery applies (None: all of them)."""

    def close(self, positions: Offsets) -> None:
        """Finish: commit ``positions`` where this guarantee commits them at the end, drop
        whatever was not published."""


class _BatchProducer:
    """What both publishers share: the producer and how a batch's records are produced."""

    def __init__(
        self,
        brokers: str,
        *,
        group: str,
        partition: int,
        table_topic: str,
        consumer: Consumer,
        partitioner: Partitioner,
        partition_count: Callable[[str], int],
        store: Callable[[BatchResult, int | None], None],
        discard: Callable[[BatchResult], None],
        stored: Callable[[bytes], bytes | None] = lambda key: None,
        fence: Callable[[], None] | None = None,
        epoch: int | None = None,
        producer_config: Mapping[str, Any] | None = None,
        delivery_timeout: float = 60.0,
        deferred_timeout: float = 300.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        kinds: Mapping[str, str] | None = None,
    ) -> None:
        self.brokers = brokers
        self.group = group
        self.partition = partition
        self.table_topic = table_topic
        self.consumer = consumer
        self.partitioner = partitioner
        self._partition_count = partition_count
        self._store = store
        self._discard = discard
        self._stored = stored
        self._fence = fence
        self.delivery_timeout = delivery_timeout
        self.deferred_timeout = deferred_timeout
        self.fenced = False
        #: the producer's limit on a record (bytes): the group's max_message_bytes unless the
        #: producer settings name message.max.bytes themselves
        self.max_message_bytes = int(
            (producer_config or {}).get("message.max.bytes", max_message_bytes)
        )
        self._kinds = {topic: kind for topic, kind in (kinds or {}).items()}
        # changelog records carry the writer's epoch: who wrote what stays visible
        self._epoch_headers: Headers | None = (
            None if epoch is None else [(EPOCH_HEADER, str(epoch).encode())]
        )
        self._client_config = self._producer_config(producer_config)
        self.producer: Producer = make_producer(
            brokers, partitioner=partitioner, config=self._client_config
        )

    def _producer_config(self, config: Mapping[str, Any] | None) -> dict[str, Any]:
        return {"message.max.bytes": self.max_message_bytes, **(config or {})}

    @classmethod
    def reserved_bytes(cls, input_topics: Iterable[str]) -> int:
        """The most header bytes this publisher adds to a record (the writer's epoch)."""
        return EPOCH_HEADER_BYTES

    def fence(self) -> None:
        if self._fence is not None:
            self._fence()

    def produce_batch(
        self,
        result: BatchResult,
        delivered: list[int],
        errors: list[KafkaError],
        refused: list[_Refused],
        extra: Headers | None = None,
    ) -> None:
        """Produce the batch's changelog records and emits (``extra`` headers on each).

        Acknowledged changelog offsets go to ``delivered``; records Kafka refused (at once or
        in their delivery report) to ``refused``, other delivery errors to ``errors``. Stops
        producing at the first record refused at once.

        This is the hot path (one call per changelog record and emit): the changelog records
        share one delivery callback, and so do the emits of a kind that carry no headers of
        their own (a refusal reads topic, key and value from the report's message and knows
        the headers); the headers every changelog record carries (the epoch, ``extra``) are
        joined once per batch.
        """
        table_topic = self.table_topic
        partition = self.partition
        table_headers = result.table_headers
        common = _join_headers(self._epoch_headers, extra)
        produce = self.producer.produce

        def reporter(
            kind: str, headers_of: Callable[[bytes | None], Headers | None]
        ) -> Callable[[KafkaError | None, Any], None]:
            # ``headers_of``: the headers the record of a key was produced with (a delivery
            # report's message carries none), for the size a refusal names
            def on_delivery(err: KafkaError | None, msg: Any) -> None:
                if err is None:
                    if kind is _CHANGELOG:
                        delivered.append(msg.offset())
                elif err.code() in RECORD_ERRORS:
                    key = msg.key()
                    size = record_size(key, msg.value(), headers_of(key))
                    refused.append(_Refused(kind, msg.topic(), key, size, err))
                else:
                    errors.append(err)

            return on_delivery

        if result.table_writes:

            def changelog_headers(key: bytes | None) -> Headers | None:
                own = table_headers.get(key) if key is not None else None
                return common if own is None else _join_headers(own, common)

            callback = reporter(_CHANGELOG, changelog_headers)
            for key, value in result.table_writes.items():
                own = table_headers.get(key) if table_headers else None
                headers = common if own is None else _join_headers(own, common)
                try:  # the common case in one call; _produce handles a full queue, refusals
                    produce(
                        table_topic,
                        value=value,
                        key=key,
                        partition=partition,
                        on_delivery=callback,
                        headers=headers,
                    )
                    continue
                except (BufferError, KafkaException):
                    pass
                if not self._produce(table_topic, key, value, headers, partition, callback):
                    return
        # emits without headers of their own share one callback per kind of record
        shared: dict[str, Callable[[KafkaError | None, Any], None]] = {}
        for out in result.emits:
            kind = self._kind(out.topic)
            if out.headers:
                headers = _join_headers(out.headers, extra)
                callback = reporter(kind, _fixed(headers))
            else:
                headers = extra
                callback = shared.get(kind) or shared.setdefault(
                    kind, reporter(kind, lambda key: extra)
                )
            target = self._target(out)
            if not self._produce(out.topic, out.key, out.value, headers, target, callback):
                return

    def _kind(self, topic: str) -> str:
        return self._kinds.get(topic, "emit")

    def refusal(self, refused: _Refused) -> RecordRejected:
        """The error that tells a user which record Kafka refused, and why."""
        err = refused.error
        key = None if refused.key is None else refused.key.decode("utf-8", "backslashreplace")
        limit = None
        advice = "check the topic and the group's permissions on it"
        if err.code() in (KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE):
            limit = self.max_message_bytes
            advice = (
                f"the producer's message.max.bytes is {limit:,} bytes and the broker's or the "
                f"topic's max.message.bytes may be lower; store or emit less per key, or raise "
                f"both limits"
            )
        return RecordRejected(
            f"Kafka refused the {refused.kind} to {refused.topic!r} for key {key!r} "
            f"({refused.size:,} bytes): {err.name()} ({err.str()}); {advice}",
            topic=refused.topic,
            key=key,
            size=refused.size,
            limit=limit,
            reason=err.name(),
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
    ) -> bool:
        """Produce one record; False if the producer refused it at once (the refusal went
        to ``callback``)."""
        kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": callback}
        if headers:
            kwargs["headers"] = headers
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self.producer.produce(topic, **kwargs)
                return True
            except BufferError:
                self.producer.poll(0.05)  # local queue full: let deliveries drain
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if not isinstance(err, KafkaError) or err.code() not in RECORD_ERRORS:
                    raise
                callback(err, _Unsent(topic, key, value))
                return False

    def await_deferred(self, result: BatchResult) -> None:
        """Wait for the batch's ``ctx.defer_commit()`` callables; ProcessingError if one
        failed or they are not all called within ``deferred_timeout``."""
        if not result.deferred:
            return
        try:
            error = result.wait_deferred(self.deferred_timeout)
        except TimeoutError as exc:
            first = next(d for d in result.deferred if not d.done)
            raise ProcessingError(
                self.group, first.topic, first.partition, first.offset, first.key, exc
            ) from exc
        if error is not None:
            raise error

    def purge(self, *, replace: bool = True) -> None:
        """Drop every record not yet sent (a failed batch publishes nothing more), wait for
        those already sent to be answered, and (``replace``) go on with a new producer.

        librdkafka carries a purge out on its broker threads, possibly after ``purge``
        returned: a record produced just after it may be purged too. A fresh producer keeps
        the next records (a rollback, the next batch) out of its reach.
        """
        old = self.producer
        try:
            old.purge(in_queue=True, in_flight=False, blocking=True)
            old.flush(self.delivery_timeout)
        except KafkaException as exc:
            logger.debug("group %s partition %d: purge failed: %s", self.group, self.partition, exc)
        if replace:
            self.producer = make_producer(
                self.brokers, partitioner=self.partitioner, config=self._client_config
            )

    def recovery_filter(self, committed: Callable[[], dict[str, int]]) -> RecordFilter | None:
        return None


class AtLeastOncePublisher(_BatchProducer):
    """Produce, wait for every acknowledgement, store, wait for deferred commits, commit the
    offsets (asynchronously; the final ones synchronously at close)."""

    CONSUMER_SETTINGS: ClassVar[Mapping[str, Any]] = {}

    def start(self) -> bool:
        return False

    def publish(self, result: BatchResult, starts: Mapping[str, int]) -> bool:
        self.fence()
        delivered: list[int] = []
        errors: list[KafkaError] = []
        refused: list[_Refused] = []
        self.produce_batch(result, delivered, errors, refused)
        remaining = 0
        if (result.table_writes or result.emits) and not refused:
            remaining = self.producer.flush(self.delivery_timeout)
        if refused:  # nothing more of the batch goes out, and what did is rolled back; the
            self.purge()  # runner then finds the message that made the refused record
            self._roll_back(result)
            self._discard(result)
            raise self.refusal(refused[0])
        if remaining or errors:
            self.purge()
            self._discard(result)
            problem = errors[0] if errors else f"{remaining} messages not acknowledged"
            raise BrokerError(
                f"group {self.group} partition {self.partition}: Kafka did not acknowledge "
                f"the batch's writes within {self.delivery_timeout}s: {problem}; the batch "
                f"will be processed again after a restart"
            )
        self._store(result, max(delivered) + 1 if delivered else None)
        # the writes and emits are out (as Goka); the offsets wait for the deferred commits
        self.await_deferred(result)
        if result.positions:
            self.fence()
            self.consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in result.positions.items()],
                asynchronous=True,
            )
        return True

    def _roll_back(self, result: BatchResult) -> None:
        """Put the stored (last committed) value of each key the failed batch wrote back on
        top of the changelog, so the changelog says what the table and the committed offsets
        say: a restart recovers exactly that and processes the batch again, never on top of
        its own uncommitted writes (which inflated counts on every restart)."""
        if not result.table_writes:
            return
        errors: list[KafkaError] = []

        def on_delivery(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                errors.append(err)

        headers = _join_headers(self._epoch_headers, [(ROLLBACK_HEADER, b"1")])
        for key in result.table_writes:
            value = self._stored(key)
            self._produce(self.table_topic, key, value, headers, self.partition, on_delivery)
        remaining = self.producer.flush(self.delivery_timeout)
        if remaining or errors:
            problem = errors[0] if errors else f"{remaining} records not acknowledged"
            raise BrokerError(
                f"group {self.group} partition {self.partition}: cannot roll the changelog back "
                f"after a refused record ({problem}); the partition must be restarted"
            )
        logger.info(
            "group %s partition %d: rolled the changelog back to the stored values of %d keys",
            self.group,
            self.partition,
            len(result.table_writes),
        )

    def commit_offsets(self, offsets: Offsets) -> None:
        self.fence()
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        self.consumer.commit(offsets=tps, asynchronous=False)

    def close(self, positions: Offsets) -> None:
        # every batch was flushed when published: whatever is queued belongs to a failed one,
        # and a fenced owner sends nothing more
        self.purge(replace=False)
        # positions only ever cover fully published messages, so committing them is right even
        # after a callback failure; a fenced runner leaves it to the new owner
        if positions and not self.fenced:
            self.fence()  # a final commit is a write too: only with a valid lease
            self.consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in positions.items()],
                asynchronous=False,
            )


class TransactionalPublisher(_BatchProducer):
    """One Kafka transaction per batch: records and input offsets; store after the commit."""

    #: never read what an open or aborted transaction wrote (librdkafka's default, but a user
    #: setting must not turn it off under exactly-once)
    CONSUMER_SETTINGS: ClassVar[Mapping[str, Any]] = {"isolation.level": "read_committed"}

    def __init__(self, brokers: str, **kwargs: Any) -> None:
        self._transactional_id = transactional_id(kwargs["group"], kwargs["partition"])
        super().__init__(brokers, **kwargs)
        self._ready = False
        self._in_transaction = False
        self._aborts = 0
        self._transactions = 0
        self._prefix = uuid.uuid4().hex[:12]

    def _producer_config(self, config: Mapping[str, Any] | None) -> dict[str, Any]:
        return {**super()._producer_config(config), "transactional.id": self._transactional_id}

    @classmethod
    def reserved_bytes(cls, input_topics: Iterable[str]) -> int:
        """The writer's epoch and the transaction headers (:data:`TXN_HEADER`,
        :data:`TXN_ID_HEADER`) at their longest for these input topics."""
        spans = ",".join(f"{t}={'9' * 19}-{'9' * 19}" for t in sorted(input_topics))
        headers = [(TXN_HEADER, spans.encode()), (TXN_ID_HEADER, b"f" * 12 + b"-" + b"9" * 19)]
        return EPOCH_HEADER_BYTES + header_bytes(headers)

    def start(self) -> bool:
        """Initialise transactions (once): fences any previous owner of the partition and
        ends the transaction it left open."""
        if self._ready:
            return False
        self.fence()  # a runner that lost its lease must not fence the rightful owner
        try:
            self.producer.init_transactions(self.delivery_timeout)
        except KafkaException as exc:
            raise BrokerError(
                f"group {self.group} partition {self.partition}: cannot initialise Kafka "
                f"transactions (transactional.id {self._transactional_id!r}) at {self.brokers}: "
                f"{exc.args[0]}. processing_guarantee 'exactly_once' needs a broker with "
                f"transactions (Kafka >= 2.5 with enough brokers for "
                f"transaction.state.log.replication.factor); otherwise use 'at_least_once'"
            ) from exc
        self._ready = True
        logger.info(
            "group %s partition %d: exactly-once, transactional.id %s",
            self.group,
            self.partition,
            self._transactional_id,
        )
        return True

    def publish(self, result: BatchResult, starts: Mapping[str, int]) -> bool:
        """Returns False if the transaction was aborted (the batch is to be processed again
        from its first offsets); raises BrokerError after :data:`MAX_ABORTS` aborts in a row
        or on a fatal producer error."""
        if not (result.table_writes or result.emits or result.positions):
            return True
        self.fence()
        producer = self.producer
        delivered: list[int] = []
        errors: list[KafkaError] = []
        refused: list[_Refused] = []
        self._transactions += 1
        marker = [
            (TXN_HEADER, _txn_marker(starts, result.positions)),
            (TXN_ID_HEADER, f"{self._prefix}-{self._transactions}".encode()),
        ]
        try:
            producer.begin_transaction()
            self._in_transaction = True
            self.produce_batch(result, delivered, errors, refused, marker)
            remaining = 0 if refused else producer.flush(self.delivery_timeout)
            if refused:
                raise self.refusal(refused[0])
            if errors or remaining:
                problem = errors[0] if errors else f"{remaining} messages not acknowledged"
                raise _TransactionAborted(problem)
            self.await_deferred(result)  # a failed one aborts the batch: nothing is committed
            if result.positions:
                producer.send_offsets_to_transaction(
                    [TopicPartition(t, p, o) for (t, p), o in result.positions.items()],
                    self.consumer.consumer_group_metadata(),
                    self.delivery_timeout,
                )
            self.fence()  # the last moment to step back: after this it is committed
            self._commit_transaction()
        except (FencedError, ProcessingError, RecordRejected):
            self._discard(result)
            self._abort_transaction()  # purges what the transaction produced
            raise
        except (KafkaException, _TransactionAborted, SystemError) as exc:
            self._discard(result)
            problem = _kafka_problem(exc)
            self._transaction_failed(problem, exc)
            self._aborts += 1
            if self._aborts >= MAX_ABORTS:
                raise BrokerError(
                    f"group {self.group} partition {self.partition}: {self._aborts} transactions "
                    f"in a row were aborted, the last because of: {problem}. Check the broker "
                    f"(transactions, topic permissions, message.max.bytes)"
                ) from exc
            logger.warning(
                "group %s partition %d: transaction aborted (%s); processing the batch again",
                self.group,
                self.partition,
                problem,
            )
            return False
        self._aborts = 0
        self._store(result, max(delivered) + 1 if delivered else None)
        return True

    def commit_offsets(self, offsets: Offsets) -> None:
        self.fence()
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            self.producer.begin_transaction()
            self._in_transaction = True
            self.producer.send_offsets_to_transaction(
                tps, self.consumer.consumer_group_metadata(), self.delivery_timeout
            )
            self.producer.commit_transaction(self.delivery_timeout)
            self._in_transaction = False
        except KafkaException as exc:
            self._transaction_failed(exc.args[0], exc)
            raise BrokerError(
                f"group {self.group} partition {self.partition}: cannot commit the starting "
                f"offsets {dict(offsets)}: {exc.args[0]}"
            ) from exc

    def recovery_filter(self, committed: Callable[[], dict[str, int]]) -> RecordFilter | None:
        """The own changelog may hold records of aborted transactions on brokers that hand
        them to read_committed consumers; recovery leaves those out."""
        return _AbortedWriteGuard(committed).keeps

    def close(self, positions: Offsets) -> None:
        # offsets were committed inside the transactions; end an open one
        if not self.fenced:
            self._abort_transaction()

    def _commit_transaction(self) -> None:
        for attempt in range(1, 4):
            try:
                self.producer.commit_transaction(self.delivery_timeout)
                self._in_transaction = False
                return
            except KafkaException as exc:
                err = exc.args[0]
                if not (isinstance(err, KafkaError) and err.retriable()) or attempt == 3:
                    raise
                logger.warning(
                    "group %s partition %d: committing the transaction failed (%s); retrying",
                    self.group,
                    self.partition,
                    err,
                )

    def _transaction_failed(self, problem: object, exc: BaseException) -> None:
        """Abort the open transaction, or raise FencedError/BrokerError if the producer is
        fenced or unusable."""
        if isinstance(problem, KafkaError):
            if problem.code() in _FENCED_CODES:
                self._in_transaction = False
                self.fenced = True
                raise FencedError(
                    f"group {self.group} partition {self.partition}: another producer with "
                    f"transactional.id {self._transactional_id!r} took over (a new owner of the "
                    f"partition, or this transaction outlived transaction.timeout.ms): {problem}"
                ) from exc
            if problem.fatal():
                self._in_transaction = False
                raise BrokerError(
                    f"group {self.group} partition {self.partition}: the transactional producer "
                    f"failed and cannot go on: {problem}; the partition must be restarted"
                ) from exc
        self._abort_transaction()

    def _abort_transaction(self) -> None:
        if not self._in_transaction:
            return
        self._in_transaction = False
        try:
            self.producer.abort_transaction(self.delivery_timeout)
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.code() in _FENCED_CODES:
                self.fenced = True
                raise FencedError(
                    f"group {self.group} partition {self.partition}: fenced by a new owner "
                    f"while aborting a transaction: {err}"
                ) from exc
            raise BrokerError(
                f"group {self.group} partition {self.partition}: cannot abort the transaction: "
                f"{err}; the partition must be restarted"
            ) from exc


def publisher_class(
    guarantee: str,
) -> type[AtLeastOncePublisher] | type[TransactionalPublisher]:
    """The publisher of a ``processing_guarantee``: at_least_once or exactly_once."""
    return TransactionalPublisher if guarantee == "exactly_once" else AtLeastOncePublisher


class _TransactionAborted(Exception):
    """A transaction's writes were not all acknowledged; it must be aborted."""


def _kafka_problem(exc: BaseException) -> object:
    """The KafkaError (or message) behind a failed producer call.

    confluent-kafka raises a fatal producer error (e.g. fenced) from ``flush`` while delivery
    callbacks still run, which surfaces as a SystemError caused by the KafkaException.
    """
    if isinstance(exc, SystemError):
        cause = exc.__cause__ or exc.__context__
        if not isinstance(cause, KafkaException):
            raise exc
        exc = cause
    return exc.args[0] if exc.args else exc


def _fixed(headers: Headers | None) -> Callable[[bytes | None], Headers | None]:
    """The headers of a single record, whatever the key."""
    return lambda key: headers


def _join_headers(*parts: Headers | None) -> Headers | None:
    joined: Headers = []
    for part in parts:
        if part:
            joined.extend(part)
    return joined or None


def _txn_marker(starts: Mapping[str, int], positions: Offsets) -> bytes:
    """The :data:`TXN_HEADER` value: ``<topic>=<first>-<next>`` per input topic."""
    spans = [f"{t}={starts.get(t, o)}-{o}" for (t, _), o in sorted(positions.items())]
    return ",".join(spans).encode()


def _txn_ends(marker: bytes) -> dict[str, int]:
    """The next input offset per topic after the batch a :data:`TXN_HEADER` describes."""
    ends: dict[str, int] = {}
    for span in marker.decode().split(","):
        if span:
            topic, _, offsets = span.rpartition("=")
            ends[topic] = int(offsets.rpartition("-")[2])
    return ends


class _AbortedWriteGuard:
    """Tells changelog records of aborted transactions apart, by the input offsets they cover.

    Kafka never hands a ``read_committed`` consumer the records of aborted transactions, but
    some brokers do (Tansu 0.6 sends no aborted-transaction index with its fetch responses).
    Every record written in an exactly-once batch carries the input offsets the batch
    consumed (:data:`TXN_HEADER`). A batch whose offsets the group's committed offsets do not
    reach was aborted: its records are skipped. One whose offsets they reach was committed,
    or was aborted and then processed again by committed batches that come later in the
    changelog and overwrite every key it wrote (with deterministic callbacks): applying it
    is harmless. Records without the header (written at-least-once) are kept.
    """

    def __init__(self, committed: Callable[[], dict[str, int]]) -> None:
        self._read_committed = committed
        self._committed: dict[str, int] | None = None
        self._verdicts: dict[bytes, bool] = {}

    def keeps(self, headers: Headers | None) -> bool:
        marker = None
        for name, value in headers or ():
            if name == TXN_HEADER:
                marker = value
        if marker is None:
            return True
        verdict = self._verdicts.get(marker)
        if verdict is None:
            ends = _txn_ends(marker)
            verdict = self._covered(ends, refresh=False) or self._covered(ends, refresh=True)
            self._verdicts[marker] = verdict
            if not verdict:
                logger.info(
                    "skipping changelog records of an aborted transaction (inputs %s): the "
                    "broker returned them to a read_committed consumer",
                    marker.decode(),
                )
        return verdict

    def _covered(self, ends: Mapping[str, int], *, refresh: bool) -> bool:
        if self._committed is None or refresh:
            self._committed = self._read_committed()
        committed = self._committed
        return all(committed.get(topic, -1) >= end for topic, end in ends.items())
