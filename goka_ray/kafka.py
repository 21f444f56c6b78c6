"""Thin wrappers over confluent-kafka: client configs, producer, consumer, topic manager."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from goka_ray.errors import BrokerError, TopicError
from goka_ray.graph import GroupGraph
from goka_ray.partitioner import MURMUR2, Partitioner

__all__ = [
    "TopicManager",
    "caught_up",
    "check_brokers",
    "client_config",
    "end_offsets",
    "make_consumer",
    "make_producer",
]

logger = logging.getLogger(__name__)
_librdkafka_logger = logging.getLogger("goka_ray.librdkafka")


def client_config(brokers: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Settings every client shares, plus ``overrides``."""
    config: dict[str, Any] = {"bootstrap.servers": brokers, "logger": _librdkafka_logger}
    config.update(overrides or {})
    return config


def make_producer(
    brokers: str,
    *,
    partitioner: Partitioner = MURMUR2,
    config: Mapping[str, Any] | None = None,
) -> Producer:
    """A producer that partitions like Kafka's Java client (murmur2) and waits for all ISRs."""
    settings: dict[str, Any] = {"acks": "all", "linger.ms": 5}
    if partitioner.librdkafka_name is not None:
        settings["partitioner"] = partitioner.librdkafka_name
    settings.update(config or {})
    return Producer(client_config(brokers, settings))


def make_consumer(
    brokers: str, group_id: str, *, config: Mapping[str, Any] | None = None
) -> Consumer:
    """A consumer for manual assignment: no auto-commit, reports partition EOF."""
    settings: dict[str, Any] = {
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
    }
    settings.update(config or {})
    return Consumer(client_config(brokers, settings))


def _unreachable(brokers: str, timeout: float, exc: object) -> BrokerError:
    return BrokerError(
        f"cannot reach Kafka at {brokers!r} within {timeout:g}s ({exc}); check bootstrap.servers "
        f"(host:port, comma separated) and that the brokers are running and reachable"
    )


def check_brokers(brokers: str, timeout: float = 10.0) -> None:
    """Raise BrokerError (within about ``timeout``) if no broker answers."""
    with TopicManager(brokers, timeout=timeout) as topics:
        topics.partitions("__goka_ray_probe__")


class TopicManager:
    """Creates and checks the topics of streams, tables and groups."""

    def __init__(
        self, brokers: str, *, timeout: float = 10.0, replication_factor: int | None = None
    ) -> None:
        self.brokers = brokers
        self.timeout = timeout
        # -1 asks the broker for its default.replication.factor (CreateTopics v4+)
        self.replication_factor = -1 if replication_factor is None else replication_factor
        self._admin = AdminClient(
            client_config(brokers, {"socket.connection.setup.timeout.ms": int(timeout * 1000)})
        )

    def __enter__(self) -> TopicManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release explicitly; here for symmetry with the other clients."""

    def _metadata(self, topic: str | None = None) -> Any:
        try:
            return self._admin.list_topics(topic=topic, timeout=self.timeout)
        except KafkaException as exc:
            raise _unreachable(self.brokers, self.timeout, exc) from exc

    def topic_ids(self, topics: Iterable[str]) -> dict[str, str]:
        """The broker's topic id (a UUID, new whenever a topic is re-created) of each topic.

        Topics the broker reports no id for (older brokers, missing topics, describe not
        supported) are left out, so callers fall back to other checks.
        """
        names = sorted(set(topics))
        if not names:
            return {}
        try:
            futures = self._admin.describe_topics(
                TopicCollection(names), request_timeout=self.timeout
            )
        except (KafkaException, NotImplementedError, TypeError) as exc:
            logger.debug("describe_topics is not available at %s: %s", self.brokers, exc)
            return {}
        ids: dict[str, str] = {}
        for name, future in futures.items():
            try:
                description = future.result(timeout=self.timeout + 5)
            except Exception as exc:  # per topic: missing, not authorised, not supported
                logger.debug("no topic id for %s at %s: %s", name, self.brokers, exc)
                continue
            topic_id = getattr(description, "topic_id", None)
            text = str(topic_id) if topic_id is not None else ""
            if text and text.strip("A=") and text != "00000000-0000-0000-0000-000000000000":
                ids[name] = text  # an all-zero id means "no id"
        return ids

    def partitions(self, topic: str) -> int | None:
        """The partition count of ``topic``, or None if it does not exist."""
        meta = self._metadata().topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            return None
        return len(meta.partitions)

    def _ensure(self, topic: str, partitions: int, config: dict[str, str]) -> None:
        existing = self.partitions(topic)
        if existing is not None:
            if existing != partitions:
                raise TopicError(
                    f"topic {topic!r} has {existing} partitions, expected {partitions}; "
                    f"co-partitioned topics must have the same count (recreate it, or change "
                    f"the other topics)"
                )
            return
        new = NewTopic(topic, partitions, self.replication_factor, config=config)
        futures = self._admin.create_topics(
            [new], operation_timeout=self.timeout, request_timeout=self.timeout
        )
        try:
            futures[topic].result(timeout=self.timeout + 5)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" in str(exc):
                return self._ensure(topic, partitions, config)
            raise TopicError(f"cannot create topic {topic!r} at {self.brokers}: {exc}") from exc
        except Exception as exc:
            raise _unreachable(self.brokers, self.timeout, exc) from exc
        logger.info("created topic %s (%d partitions, %s)", topic, partitions, config or "stream")

    def ensure_stream(self, topic: str, partitions: int) -> None:
        """Create the stream topic if missing; TopicError if it has another partition count."""
        self._ensure(topic, partitions, {})

    def ensure_table(self, topic: str, partitions: int) -> None:
        """Create the table topic (compacted) if missing; TopicError on another count."""
        self._ensure(topic, partitions, {"cleanup.policy": "compact"})

    def check_copartitioned(self, graph: GroupGraph) -> int:
        """All existing co-partitioned topics of ``graph`` must agree; returns their count."""
        md = self._metadata().topics
        counts: dict[str, int | None] = {}
        for topic in graph.copartitioned_topics():
            meta = md.get(topic)
            ok = meta is not None and meta.error is None and meta.partitions
            counts[topic] = len(meta.partitions) if ok else None
        found = {c for c in counts.values() if c is not None}
        if len(found) > 1:
            listing = ", ".join(
                f"{t}: {c if c is not None else 'missing'}" for t, c in counts.items()
            )
            raise TopicError(
                f"group {graph.group!r}: its inputs, loop, table and joined tables must all have "
                f"the same partition count (co-partitioning), but: {listing}"
            )
        if not found:
            raise TopicError(f"group {graph.group!r}: none of {list(counts)} exists")
        return found.pop()

    def ensure_group_topics(self, graph: GroupGraph) -> int:
        """Check inputs, joins and lookups exist; create the group's table, loop and DLQ topics.

        Returns the group's partition count.
        """
        md = self._metadata().topics
        required = [i.topic for i in graph.inputs] + [j.table for j in graph.joins]
        required += [lk.table for lk in graph.lookups]
        missing = [t for t in required if t not in md or md[t].error is not None]
        if missing:
            raise TopicError(
                f"group {graph.group!r}: missing topic(s) {missing} at {self.brokers}; create "
                f"them first (e.g. TopicManager(brokers).ensure_stream(topic, partitions), or "
                f"kafka-topics.sh --create)"
            )
        partitions = self.check_copartitioned(graph)
        if graph.persist is not None:
            self.ensure_table(graph.table_topic, partitions)
        if graph.loop is not None:
            self.ensure_stream(graph.loop_topic, partitions)
        if graph.uses_dead_letter():
            self.ensure_stream(graph.dead_letter_topic, partitions)
        return partitions


def caught_up(consumer: Consumer, topic: str, partition: int, next_offset: int | None) -> bool:
    """Whether the consumer has read ``topic[partition]`` up to its high watermark.

    Uses the high watermark of the last fetch response (cached by librdkafka, no request).
    Partition-EOF events alone are not enough: some brokers (Tansu) never send one while the
    partition is being written continuously, and ListOffsets may under-report the end.
    ``next_offset`` is the next offset to read, or None if nothing was read yet.

    Transaction markers (control records) take offsets but are never handed to the
    application, so a partition written transactionally ends with one: the consumer's own
    position, which moves past them, counts too. With ``isolation.level=read_committed`` the
    readable end is the last stable offset, below the high watermark while a transaction is
    open; the consumer then reports partition EOF there, which callers also treat as the end.
    """
    tp = TopicPartition(topic, partition)
    try:
        low, high = consumer.get_watermark_offsets(tp, cached=True)
    except KafkaException:
        return False
    if high < 0:
        return False  # no fetch response yet
    try:
        position = consumer.position([tp])[0].offset
    except KafkaException:
        position = -1
    reached = max(next_offset if next_offset is not None else -1, position)
    if reached < 0:
        return bool(low >= 0 and low >= high)  # nothing read: only an empty partition is done
    return bool(reached >= high)


def end_offsets(
    consumer: Consumer, partitions: Iterable[tuple[str, int]], timeout: float = 10.0
) -> dict[tuple[str, int], int]:
    """The end (high watermark: the offset the next record will get) of each partition.

    ListOffsets alone is not trusted (Tansu answers the base offset of the last record batch
    + 1): the consumer is assigned just before the listed end and reads to the end, and the
    larger of what it read and the fetch response's high watermark is taken. Leaves the
    consumer unassigned. Partitions the consumer cannot confirm within ``timeout`` keep
    their listed end.
    """
    wanted = list(dict.fromkeys(partitions))
    if not wanted:
        return {}
    ends: dict[tuple[str, int], int] = {}
    probes = []
    for topic, partition in wanted:
        tp = TopicPartition(topic, partition)
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout, cached=False)
        except KafkaException as exc:
            raise BrokerError(f"cannot read the end offset of {topic}[{partition}]: {exc}") from exc
        ends[(topic, partition)] = max(high, 0)
        probes.append(TopicPartition(topic, partition, max(low, high - 1, 0)))
    consumer.assign(probes)
    pending = set(ends)
    deadline = time.monotonic() + timeout
    try:
        while pending and time.monotonic() < deadline:
            for m in consumer.consume(1000, timeout=0.2):
                key = (m.topic(), m.partition())
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(key)
                    continue
                ends[key] = max(ends[key], m.offset() + 1)
            for key in list(pending):
                if caught_up(consumer, key[0], key[1], None):
                    pending.discard(key)
        for topic, partition in wanted:
            try:
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), cached=True
                )
            except KafkaException:
                continue
            ends[(topic, partition)] = max(ends[(topic, partition)], high)
    finally:
        consumer.unassign()
    if pending:
        logger.warning(
            "could not confirm the end of %s by reading; using the ListOffsets answer",
            sorted(pending),
        )
    return ends
