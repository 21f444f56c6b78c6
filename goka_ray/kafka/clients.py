"""Kafka clients as goka-ray uses them: shared settings, producer, consumer, end offsets."""

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
    TopicPartition,
)

from goka_ray.core.partitioner import MURMUR2, Partitioner
from goka_ray.errors import BrokerError, ConfigError

__all__ = [
    "broker_unreachable",
    "caught_up",
    "check_client_settings",
    "client_config",
    "consume_available",
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


def consume_available(consumer: Consumer, max_messages: int, timeout: float) -> list[Any]:
    """What the consumer has buffered, up to ``max_messages``; waits up to ``timeout`` seconds
    only when nothing is buffered, and then returns as soon as something arrives.

    ``Consumer.consume(n, timeout)`` waits until it has ``n`` messages or the timeout passed,
    so a batch waited for the timeout whenever fewer messages were there: ``max_messages``
    bounds the work of a batch, never the wait for one.
    """
    messages: list[Any] = consumer.consume(max_messages, timeout=0)
    if messages or timeout <= 0:
        return messages
    first = consumer.poll(timeout)
    if first is None:
        return []
    if max_messages > 1:
        return [first, *consumer.consume(max_messages - 1, timeout=0)]
    return [first]


def check_client_settings(
    consumer: Mapping[str, Any] | None = None, producer: Mapping[str, Any] | None = None
) -> None:
    """Let librdkafka check the ``kafka.consumer`` and ``kafka.producer`` settings up front.

    A misspelled setting or a bad value would otherwise fail every partition actor as it
    creates its clients. Builds each client without brokers (nothing is contacted) and
    raises ConfigError naming the section and librdkafka's complaint.
    """
    quiet = logging.getLogger("goka_ray.librdkafka.check")
    for section, settings, make in (
        ("consumer", consumer, lambda cfg: Consumer({"group.id": "goka-ray-check", **cfg})),
        ("producer", producer, Producer),
    ):
        if not settings:
            continue
        try:
            client = make({**settings, "logger": quiet})
        except KafkaException as exc:
            problem = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else exc
            raise ConfigError(
                f"kafka.{section}: librdkafka refuses the settings: {problem}; see "
                f"https://github.com/confluentinc/librdkafka/blob/master/CONFIGURATION.md"
            ) from None
        if isinstance(client, Consumer):
            client.close()


def broker_unreachable(brokers: str, timeout: float, exc: object) -> BrokerError:
    return BrokerError(
        f"cannot reach Kafka at {brokers!r} within {timeout:g}s ({exc}); check bootstrap.servers "
        f"(host:port, comma separated) and that the brokers are running and reachable"
    )


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
    larger of what it read and the fetch response's high watermark is taken. A partition
    listed empty (first offset = end) holds no batch to under-report: its end is taken as
    listed, with no fetch (a fetch of an empty log is held for ``fetch.wait.max.ms``). Leaves
    the consumer unassigned. Partitions the consumer cannot confirm within ``timeout`` keep
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
        if high > low:
            probes.append(TopicPartition(topic, partition, max(low, high - 1, 0)))
    if not probes:
        consumer.unassign()
        return ends
    consumer.assign(probes)
    pending = {(tp.topic, tp.partition) for tp in probes}
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
        for tp in probes:
            try:
                _, high = consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            ends[(tp.topic, tp.partition)] = max(ends[(tp.topic, tp.partition)], high)
    finally:
        consumer.unassign()
    if pending:
        logger.warning(
            "could not confirm the end of %s by reading; using the ListOffsets answer",
            sorted(pending),
        )
    return ends
