"""ViewActor: serves reads of some partitions of a table, kept current from its changelog.

A thread owns the consumer (Kafka polls block); reads are answered from the in-memory copy on
other threads. Values stay encoded: the View handle decodes them, so the actor needs no codec.
After a restart the actor rebuilds its copy from the changelog (it is only a cache).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import ray
from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from goka_ray.codecs import Bytes
from goka_ray.kafka import caught_up, make_consumer
from goka_ray.status import ViewStatus
from goka_ray.storage import MemoryStorage, Storage
from goka_ray.tables import TablePartition

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ViewSpec:
    brokers: str
    table: str
    consumer_config: dict[str, Any]


class ViewActor:
    """Keeps ``partitions`` of ``spec.table`` current and answers get/has/items/count."""

    def __init__(self, spec: ViewSpec, partitions: list[int], name: str) -> None:
        self.spec = spec
        self.name = name
        self.partitions = list(partitions)
        self._storages: dict[int, Storage] = {p: MemoryStorage() for p in partitions}
        self._tables = {
            p: TablePartition(spec.table, p, s, Bytes()) for p, s in self._storages.items()
        }
        self._lock = threading.Lock()
        self._state = "recovering"
        self._lag: dict[int, int] = {}
        self._stop = threading.Event()
        self._node_id = ray.get_runtime_context().get_node_id()
        self._thread = threading.Thread(target=self._follow, daemon=True, name="view")
        self._thread.start()

    def _follow(self) -> None:
        try:
            self._follow_changelog()
        except BaseException:
            logger.exception(
                "view %s: changelog reader died; exiting so Ray restarts it", self.name
            )
            import os

            os._exit(1)

    def _follow_changelog(self) -> None:
        consumer = make_consumer(
            self.spec.brokers, f"goka-ray-view-{self.name}", config=self.spec.consumer_config
        )
        consumer.assign(
            [TopicPartition(self.spec.table, p, OFFSET_BEGINNING) for p in self.partitions]
        )
        not_at_end = set(self.partitions)
        positions: dict[int, int] = {}
        last_lag = 0.0
        while not self._stop.is_set():
            records: dict[int, list[tuple[bytes | None, bytes | None]]] = {}
            for m in consumer.consume(10000, timeout=0.2):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        not_at_end.discard(m.partition())
                    else:
                        logger.warning("view %s: %s", self.name, err)
                    continue
                records.setdefault(m.partition(), []).append((m.key(), m.value()))
                positions[m.partition()] = m.offset() + 1
            if records:
                with self._lock:
                    for p, recs in records.items():
                        self._tables[p].apply_changelog(recs, positions[p])
            for p in list(not_at_end):
                if caught_up(consumer, self.spec.table, p, positions.get(p)):
                    not_at_end.discard(p)
            if not not_at_end and self._state == "recovering":
                self._state = "running"
            now = time.monotonic()
            if now - last_lag > 2:
                last_lag = now
                for p in self.partitions:
                    try:
                        _, high = consumer.get_watermark_offsets(
                            TopicPartition(self.spec.table, p), cached=True
                        )
                    except Exception:
                        continue
                    if high >= 0:
                        self._lag[p] = max(0, high - positions.get(p, 0))
        consumer.close()

    # -- reads (batched: one call serves many keys) -------------------------------------------

    def get(self, partition_keys: list[tuple[int, bytes]]) -> list[bytes | None]:
        with self._lock:
            return [self._storages[p].get(k) for p, k in partition_keys]

    def items(
        self, start: bytes | None = None, end: bytes | None = None
    ) -> list[tuple[bytes, bytes]]:
        """Every pair of this actor's partitions with start <= key < end, sorted by key."""
        import heapq

        with self._lock:
            runs = [list(s.iterate(start, end)) for s in self._storages.values()]
        return list(heapq.merge(*runs, key=lambda kv: kv[0]))

    def count(self) -> int:
        with self._lock:
            return sum(s.key_count() for s in self._storages.values())

    def status(self) -> ViewStatus:
        return ViewStatus(
            table=self.spec.table,
            actor_name=self.name,
            partitions=self.partitions,
            state=self._state,
            keys=self.count(),
            lag=dict(self._lag),
            node_id=self._node_id,
        )

    def ping(self) -> str:
        return self._state

    def shutdown(self) -> None:
        self._stop.set()
        self._thread.join(10)
