"""The writer epochs a changelog shows: the floor of every epoch a coordinator hands out.

Every changelog record a partition runner writes carries its owner's epoch in the header
:data:`EPOCH_HEADER`. The changelog outlives every coordinator and even the Ray cluster, so
the highest epoch in a changelog partition is a floor that the next epoch must exceed: a
coordinator that lost its own record of epochs (a new cluster) still never reuses one.

Epochs only increase along a changelog partition, so the highest one is near its end: only a
tail is read, widened towards the start while it holds no epoch header.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from goka_ray.errors import BrokerError
from goka_ray.kafka.clients import caught_up, make_consumer

__all__ = ["EPOCH_HEADER", "changelog_epochs", "record_epoch"]

logger = logging.getLogger(__name__)

#: header of every changelog record: the epoch of the owner that wrote it (decimal)
EPOCH_HEADER = "goka-ray.epoch"


def record_epoch(headers: Any) -> int | None:
    """The epoch in a record's headers (a list of (name, bytes) pairs), or None."""
    for name, value in headers or ():
        if name == EPOCH_HEADER and value is not None:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def changelog_epochs(
    brokers: str,
    topic: str,
    *,
    consumer_config: Mapping[str, Any] | None = None,
    tail: int = 500,
    timeout: float = 30.0,
) -> dict[int, int]:
    """The highest writer epoch in each partition of changelog ``topic``.

    Reads the last ``tail`` records of each partition (further back, ten times as many each
    time, where they hold no epoch header) until the end, with ``read_uncommitted`` so that
    records of open or aborted transactions count too. Partitions without any epoch header
    are left out; a topic that does not exist gives ``{}``. Raises BrokerError if the broker
    cannot be read within ``timeout`` seconds.
    """
    # a one-off read to the end: a short fetch wait, so partitions already at their end (a
    # new group's empty changelog) report it at once rather than after the broker's wait; on
    # the critical path of every start (the broker's default wait made it 0.6 s, now 0.2 s)
    settings = {
        "fetch.wait.max.ms": 10,
        **(consumer_config or {}),
        "isolation.level": "read_uncommitted",
    }
    consumer = make_consumer(brokers, f"goka-ray-epochs-{uuid.uuid4().hex[:8]}", config=settings)
    deadline = time.monotonic() + timeout
    try:
        try:
            meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        except KafkaException as exc:
            raise BrokerError(f"cannot read the epochs of {topic} at {brokers}: {exc}") from exc
        if meta is None or meta.error is not None or not meta.partitions:
            return {}
        found: dict[int, int] = {}
        window = {p: tail for p in meta.partitions}
        while window:
            starts = _starts(consumer, topic, window, deadline)
            seen = _read_epochs(consumer, topic, starts, deadline)
            found.update(seen)
            # no header in the tail read and more before it: look further back
            window = {
                p: size * 10
                for p, size in window.items()
                if p not in seen and starts[p][0] > starts[p][1]
            }
        return found
    finally:
        consumer.close()


def _starts(
    consumer: Any, topic: str, window: Mapping[int, int], deadline: float
) -> dict[int, tuple[int, int]]:
    """(first offset to read, low watermark) per partition, ``window[p]`` records back."""
    starts = {}
    for p, size in window.items():
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=max(0.1, deadline - time.monotonic())
            )
        except KafkaException as exc:
            raise BrokerError(f"cannot read the end of {topic}[{p}]: {exc}") from exc
        first = max(low, high - size, 0)
        starts[p] = (first, low)
    return starts


def _read_epochs(
    consumer: Any, topic: str, starts: Mapping[int, tuple[int, int]], deadline: float
) -> dict[int, int]:
    consumer.assign([TopicPartition(topic, p, first) for p, (first, _) in starts.items()])
    remaining = set(starts)
    found: dict[int, int] = {}
    try:
        while remaining:
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"reading the epochs of {topic} partitions {sorted(remaining)} did not "
                    f"reach their end in time; check the broker"
                )
            for m in consumer.consume(5000, timeout=0.2):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        remaining.discard(m.partition())
                    continue
                epoch = record_epoch(m.headers())
                if epoch is not None:
                    found[m.partition()] = max(found.get(m.partition(), 0), epoch)
            for p in list(remaining):
                if caught_up(consumer, topic, p, None):
                    remaining.discard(p)
    finally:
        consumer.unassign()
    return found
