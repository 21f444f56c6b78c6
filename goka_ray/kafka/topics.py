"""TopicManager: create and check the topics a group needs (streams, its table, loop, DLQ)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient, NewTopic

from goka_ray.core.graph import GroupGraph
from goka_ray.errors import TopicError
from goka_ray.kafka.clients import broker_unreachable, client_config

__all__ = ["TopicManager", "check_brokers"]

logger = logging.getLogger(__name__)


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
            raise broker_unreachable(self.brokers, self.timeout, exc) from exc

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
            raise broker_unreachable(self.brokers, self.timeout, exc) from exc
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


def check_brokers(brokers: str, timeout: float = 10.0) -> None:
    """Raise BrokerError (within about ``timeout``) if no broker answers."""
    with TopicManager(brokers, timeout=timeout) as topics:
        topics.partitions("__goka_ray_probe__")
