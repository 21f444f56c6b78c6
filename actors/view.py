"""ViewActor: serves reads of some partitions of a table, kept current from its changelog.

A thread owns the consumer (Kafka polls block); reads are answered from the in-memory copy on
other threads. Values stay encoded: the View handle decodes them, so the actor needs no codec.
After a restart the actor rebuilds its copy from the changelog (it is only a cache).

States (``ViewStatus.STATES``): ``connecting`` until the broker answers, ``recovering`` while
reading to the end of the changelog, ``running`` once caught up. When the consumer reports that
the brokers are unreachable (or the reader fails), the actor goes back to ``connecting``, keeps
serving its copy, and reconnects with exponential backoff (0.5 s doubling to 10 s), resuming
from the offsets it applied last.

A changelog that was recreated (a new topic id, or a stored offset beyond the new high
watermark, as after a restart of a memory-only broker) or truncated (offset out of range) is
reloaded from the beginning into a fresh copy; the old copy is served until the new one has
caught up. The view therefore sets ``auto.offset.reset=error`` on its consumer and handles the
reset itself.
"""

from __future__ import annotations

import bisect
import heapq
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import ray
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from goka_ray.control.status import ViewStatus
from goka_ray.core.storage import MemoryStorage, Storage, WriteBatch
from goka_ray.core.tables import UpdateCallback, UpdateContext, UpdateStorage
from goka_ray.kafka.clients import caught_up, client_config, make_consumer

logger = logging.getLogger(__name__)

BACKOFF_START = 0.5  # seconds before the first reconnect attempt
BACKOFF_MAX = 10.0
PROBE_TIMEOUT = 5.0  # how long a reconnect attempt waits for the broker to answer
PAGE_LIMIT = 1000  # default pairs per page of items
PAGE_BYTES = 4 << 20  # a page stops growing once its keys and values reach this size

# errors of the consumer that mean the brokers cannot be reached (or refuse us)
_CONNECTION_ERRORS = frozenset(
    {
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TRANSPORT,
        KafkaError._RESOLVE,
        KafkaError._TIMED_OUT,
        KafkaError._AUTHENTICATION,
        KafkaError._SSL,
    }
)
# per-partition errors that mean our offset is not in the log any more
_OFFSET_RESET_ERRORS = frozenset({KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE})
# per-partition errors that mean the topic is gone: reconnect, wait for it, compare topic ids
_TOPIC_GONE_ERRORS = frozenset(
    {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION}
)
# settings that matter to an admin client as much as to a consumer (security, network)
_SHARED_PREFIXES = ("security.", "sasl.", "ssl.", "client.", "socket.", "broker.", "reconnect.")


@dataclass(frozen=True)
class ViewSpec:
    """What a view actor follows: the table topic and how to reach it."""

    brokers: str
    table: str
    consumer_config: dict[str, Any]
    #: ``update(ctx, storage, key, value)`` instead of the default store/delete of a record
    update: UpdateCallback | None = None


class BrokerLost(Exception):
    """The reader lost the broker (or never reached it); the actor reconnects."""


def offset_reset_reason(next_offset: int | None, low: int, high: int) -> str | None:
    """Why a partition read up to ``next_offset`` must be reloaded, given the log's watermarks.

    ``low``/``high`` come from a fetch response (negative: not known yet). An offset beyond the
    high watermark means the changelog was recreated (a memory-only broker restarted, or the
    topic was deleted and created again) or truncated; one below the log start offset means
    records were deleted before this view read them. Either way the copy is stale.
    """
    if next_offset is None or high < 0:
        return None
    if next_offset > high:
        return (
            f"its stored offset {next_offset} is beyond the changelog's high watermark {high} "
            f"(the changelog was recreated or truncated)"
        )
    if 0 <= low <= high and next_offset < low:
        return (
            f"its stored offset {next_offset} is below the changelog's start offset {low} "
            f"(records were deleted before this view read them)"
        )
    return None


class KeyIndex:
    """The sorted keys of one partition's storage, for paged range reads.

    Kept current cheaply: new keys are noted on write and inserted when the next page is read;
    deleted keys stay in the list (skipped on read) until enough pile up to rebuild it.
    """

    def __init__(self) -> None:
        self._keys: list[bytes] = []
        self._added: set[bytes] = set()
        self._stale = 0
        self._rebuild = True

    def note(self, key: bytes, existed: bool, exists: bool) -> None:
        """Record a write: whether ``key`` existed before and exists after it."""
        if self._rebuild:
            return  # the next read rebuilds the list from the storage anyway
        if exists and not existed:
            self._added.add(key)
        elif existed and not exists:
            self._stale += 1
        if len(self._added) + self._stale > self._limit():
            self.invalidate()  # cheaper to rebuild than to patch; bounds the memory of notes

    def _limit(self) -> int:
        return max(1024, len(self._keys) // 8)

    def invalidate(self) -> None:
        """The storage was replaced: rebuild from it on the next read."""
        self._keys, self._added, self._stale, self._rebuild = [], set(), 0, True

    def _refresh(self, storage: Storage) -> None:
        keys = self._keys
        if self._rebuild:
            self._keys = [k for k, _ in storage.iterate()]
            self._added, self._stale, self._rebuild = set(), 0, False
            return
        for key in sorted(self._added):
            i = bisect.bisect_left(keys, key)
            if i == len(keys) or keys[i] != key:
                keys.insert(i, key)
        self._added.clear()

    def page(
        self, storage: Storage, start: bytes | None, end: bytes | None, limit: int
    ) -> Iterator[tuple[bytes, bytes]]:
        """Up to ``limit`` pairs with start <= key < end, in key order."""
        self._refresh(storage)
        keys = self._keys
        i = 0 if start is None else bisect.bisect_left(keys, start)
        n = 0
        while i < len(keys) and n < limit:
            key = keys[i]
            i += 1
            if end is not None and key >= end:
                return
            value = storage.get(key)
            if value is not None:
                n += 1
                yield key, value


class ViewActor:
    """Keeps ``partitions`` of ``spec.table`` current and answers get/page/count/status."""

    def __init__(self, spec: ViewSpec, partitions: list[int], name: str) -> None:
        self.spec = spec
        self.name = name
        self.partitions = list(partitions)
        self._storages: dict[int, Storage] = {p: MemoryStorage() for p in partitions}
        self._index = {p: KeyIndex() for p in partitions}
        # partitions being reloaded: the new copy is built here, the old one still served
        self._loading: dict[int, Storage] = {}
        self._lock = threading.Lock()
        self._state = "connecting"
        self._error: str | None = None
        self._reconnects = 0
        self._reloads = 0
        self._topic_id: str | None = None
        self._ran = False  # reached "running" in the current session
        self._lag: dict[int, int] = {}
        self._warned: dict[str, float] = {}
        self._stop = threading.Event()
        self._node_id = ray.get_runtime_context().get_node_id()
        self._thread = threading.Thread(target=self._follow, daemon=True, name="view")
        self._thread.start()

    # -- the reader thread ---------------------------------------------------------------------

    def _follow(self) -> None:
        delay = BACKOFF_START
        while not self._stop.is_set():
            self._ran = False
            try:
                self._session()
                return
            except BrokerLost as exc:
                reason, exc_info = str(exc), False
            except Exception as exc:
                reason, exc_info = f"the changelog reader failed: {exc!r}", True
            except BaseException:
                logger.exception("view %s: changelog reader died; exiting so Ray restarts it", self)
                import os

                os._exit(1)
            if self._ran:
                delay = BACKOFF_START
            with self._lock:
                self._state, self._error = "connecting", reason
                self._reconnects += 1
                keys = sum(s.key_count() for s in self._storages.values())
            logger.warning(
                "view %s: %s; serving the last copy (%d keys), reconnecting in %.1fs",
                self.name,
                reason,
                keys,
                delay,
                exc_info=exc_info,
            )
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, BACKOFF_MAX)

    def _session(self) -> None:
        """Connect, catch up and follow until stopped; BrokerLost when the broker is lost."""
        lost: list[str] = []

        def on_error(err: KafkaError) -> None:  # called from consume(), on this thread
            if err.fatal() or err.code() in _CONNECTION_ERRORS:
                lost.append(f"{err.name()}: {err.str()}")
            else:
                self._warn(f"consumer error {err.name()}: {err.str()}")

        self._probe()
        config = {**self.spec.consumer_config, "error_cb": on_error, "auto.offset.reset": "error"}
        consumer = make_consumer(self.spec.brokers, f"goka-ray-view-{self.name}", config=config)
        try:
            with self._lock:
                self._state, self._error = "recovering", None
            self._assign(consumer)
            self._run(consumer, lost)
        finally:
            consumer.close()

    def _probe(self) -> None:
        """Check the broker answers and the topic is as expected; mark reloads if recreated."""
        from confluent_kafka import TopicCollection
        from confluent_kafka.admin import AdminClient

        shared = {
            k: v for k, v in self.spec.consumer_config.items() if k.startswith(_SHARED_PREFIXES)
        }
        admin = AdminClient(client_config(self.spec.brokers, shared))
        topic = self.spec.table
        try:
            futures = admin.describe_topics(TopicCollection([topic]), request_timeout=PROBE_TIMEOUT)
            description = futures[topic].result(timeout=PROBE_TIMEOUT + 1)
        except Exception as exc:
            text = str(exc)
            if "UNKNOWN_TOPIC" in text:
                raise BrokerLost(
                    f"the changelog topic {topic!r} does not exist at {self.spec.brokers} "
                    f"(deleted, or the broker lost it); waiting for it to be created again"
                ) from None
            raise BrokerLost(f"cannot reach Kafka at {self.spec.brokers}: {text}") from None
        present = {p.id for p in description.partitions}
        missing = sorted(set(self.partitions) - present)
        if missing:
            raise BrokerLost(
                f"the changelog topic {topic!r} has no partition(s) {missing} any more "
                f"({len(present)} now); stop and start the View to match the new count"
            )
        topic_id = _topic_id(description)
        if topic_id is not None and self._topic_id is not None and topic_id != self._topic_id:
            for p in self.partitions:
                self._start_reload(
                    p,
                    f"the changelog topic was recreated (topic id {self._topic_id} -> {topic_id})",
                )
        if topic_id is not None:
            self._topic_id = topic_id

    def _next_offset(self, p: int) -> int | None:
        storage = self._loading.get(p, self._storages[p])
        return storage.offset()

    def _assign(self, consumer: Consumer) -> None:
        consumer.assign(
            [
                TopicPartition(self.spec.table, p, _or_beginning(self._next_offset(p)))
                for p in self.partitions
            ]
        )

    def _start_reload(self, p: int, reason: str) -> None:
        if p in self._loading and self._loading[p].offset() is None:
            return  # reloading from the beginning already
        logger.warning(
            "view %s: reloading %s[%d] from the beginning: %s; the previous copy is served until "
            "the reload has caught up",
            self.name,
            self.spec.table,
            p,
            reason,
        )
        with self._lock:
            self._loading[p] = MemoryStorage()
            self._reloads += 1
            if self._state == "running":
                self._state = "recovering"

    def _run(self, consumer: Consumer, lost: list[str]) -> None:
        topic = self.spec.table
        not_at_end = set(self.partitions)
        last_lag = 0.0
        while not self._stop.is_set():
            messages = consumer.consume(10000, timeout=0.2)
            if lost:
                raise BrokerLost(f"lost the broker ({lost[0]})")
            records: dict[int, list[Message]] = {}
            resets: dict[int, str] = {}
            for m in messages:
                err = m.error()
                p = m.partition()
                if err is None:
                    records.setdefault(p, []).append(m)
                elif err.code() == KafkaError._PARTITION_EOF:
                    not_at_end.discard(p)
                elif err.code() in _OFFSET_RESET_ERRORS and p is not None:
                    resets[p] = f"its offset is out of range ({err.str()})"
                elif err.fatal() or err.code() in _CONNECTION_ERRORS:
                    raise BrokerLost(f"lost the broker ({err.name()}: {err.str()})")
                elif err.code() in _TOPIC_GONE_ERRORS:
                    raise BrokerLost(f"the changelog {topic}[{p}] is gone ({err.str()})")
                else:
                    self._warn(f"{topic}[{p}]: {err.name()}: {err.str()}")
            for p, msgs in records.items():
                if p not in resets:
                    self._apply(p, msgs)
            for p in self.partitions:
                try:
                    low, high = consumer.get_watermark_offsets(
                        TopicPartition(topic, p), cached=True
                    )
                except Exception:
                    continue
                reason = offset_reset_reason(self._next_offset(p), low, high)
                if reason is not None:
                    resets.setdefault(p, reason)
            if resets:
                for p, reason in sorted(resets.items()):
                    self._start_reload(p, reason)
                    not_at_end.add(p)
                self._assign(consumer)
                continue
            for p in list(not_at_end):
                if caught_up(consumer, topic, p, self._next_offset(p)):
                    not_at_end.discard(p)
            for p in [p for p in self._loading if p not in not_at_end]:
                self._finish_reload(p)
            if not not_at_end and not self._loading and self._state != "running":
                with self._lock:
                    self._state = "running"
                self._ran = True
                logger.info("view %s: caught up with %s, following it", self.name, topic)
            now = time.monotonic()
            if now - last_lag > 2:
                last_lag = now
                self._update_lag(consumer)

    def _update(
        self, update: UpdateCallback, p: int, m: Message, key: bytes, batch: WriteBatch
    ) -> None:
        """Run the view's update callback on one record; a raising one skips the record."""
        with self._lock:
            storage = self._loading.get(p) or self._storages[p]
        ctx = UpdateContext(
            self.spec.table,
            p,
            m.offset() if m.offset() is not None else -1,
            {k: v or b"" for k, v in (m.headers() or [])},
        )
        try:
            update(
                ctx,
                UpdateStorage(storage, batch),
                key.decode("utf-8", "surrogateescape"),
                m.value(),
            )
        except Exception:
            logger.exception(
                "view of %s: update callback failed on %s[%d]@%s; record not stored",
                self.spec.table,
                self.spec.table,
                p,
                m.offset(),
            )

    def _apply(self, p: int, messages: list[Message]) -> None:
        """Apply one partition's records in order (value None = tombstone) and their offset."""
        expected = self._next_offset(p)
        update = self.spec.update
        batch = WriteBatch()
        writes = batch.writes
        for m in messages:
            offset = m.offset()
            if expected is not None and offset is not None and offset < expected:
                continue  # delivered again after a re-assignment
            key = m.key()
            if key is not None:  # records without a key cannot belong to a table
                if update is None:
                    writes[key] = m.value()
                else:
                    self._update(update, p, m, key, batch)
            if offset is not None:
                batch.offset = offset + 1
        if batch.offset is None:
            return
        with self._lock:
            loading = self._loading.get(p)
            if loading is not None:
                loading.write(batch)
                return
            storage, index = self._storages[p], self._index[p]
            for key, value in writes.items():
                index.note(key, storage.has(key), value is not None)
            storage.write(batch)

    def _finish_reload(self, p: int) -> None:
        with self._lock:
            fresh = self._loading.pop(p)
            old = self._storages[p].key_count()
            self._storages[p] = fresh
            self._index[p].invalidate()
        logger.warning(
            "view %s: %s[%d] reloaded (%d keys, %d before); serving the new copy",
            self.name,
            self.spec.table,
            p,
            fresh.key_count(),
            old,
        )

    def _update_lag(self, consumer: Consumer) -> None:
        for p in self.partitions:
            try:
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(self.spec.table, p), cached=True
                )
            except Exception:
                continue
            if high >= 0:
                self._lag[p] = max(0, high - (self._next_offset(p) or 0))

    def _warn(self, message: str) -> None:
        """Log ``message`` at WARNING, at most once per 10 s."""
        now = time.monotonic()
        if now - self._warned.get(message, -1e9) >= 10:
            self._warned[message] = now
            logger.warning("view %s: %s", self.name, message)

    def __repr__(self) -> str:
        return f"ViewActor({self.name!r})"

    # -- reads (batched: one call serves many keys) -------------------------------------------

    def get(self, partition_keys: list[tuple[int, bytes]]) -> list[bytes | None]:
        """The encoded values of (partition, key) pairs, None where absent."""
        with self._lock:
            return [self._storages[p].get(k) for p, k in partition_keys]

    def page(
        self,
        start: bytes | None = None,
        end: bytes | None = None,
        limit: int = PAGE_LIMIT,
        max_bytes: int = PAGE_BYTES,
    ) -> tuple[list[tuple[bytes, bytes]], bool]:
        """The first pairs of this actor's partitions with start <= key < end, sorted by key.

        At most ``limit`` pairs (and not much more than ``max_bytes``, but at least one).
        Returns (pairs, more): ``more`` is False when no pair after the last one is in range.
        Continue with ``start = last_key + b"\\x00"``, the least key after ``last_key``.
        """
        limit = max(1, limit)
        out: list[tuple[bytes, bytes]] = []
        size = 0
        with self._lock:
            runs = [
                self._index[p].page(self._storages[p], start, end, limit + 1)
                for p in self.partitions
            ]
            for key, value in heapq.merge(*runs, key=lambda kv: kv[0]):
                if len(out) >= limit or (out and size >= max_bytes):
                    return out, True
                out.append((key, value))
                size += len(key) + len(value)
        return out, False

    def count(self) -> int:
        """The number of keys this actor serves."""
        with self._lock:
            return sum(s.key_count() for s in self._storages.values())

    def status(self) -> ViewStatus:
        with self._lock:
            offsets = {p: o for p in self.partitions if (o := self._next_offset(p)) is not None}
            state, error = self._state, self._error
        return ViewStatus(
            table=self.spec.table,
            actor_name=self.name,
            partitions=self.partitions,
            state=state,
            keys=self.count(),
            lag=dict(self._lag),
            node_id=self._node_id,
            offsets=offsets,
            reconnects=self._reconnects,
            reloads=self._reloads,
            error=error,
        )

    def ping(self) -> str:
        """The actor's state: connecting | recovering | running."""
        return self._state

    def shutdown(self) -> None:
        """Stop following the changelog (reads keep being served)."""
        self._stop.set()
        self._thread.join(10)


def _or_beginning(offset: int | None) -> int:
    return OFFSET_BEGINNING if offset is None else offset


def _topic_id(description: Any) -> str | None:
    """The topic's id as text, or None if the broker does not report one."""
    topic_id = getattr(description, "topic_id", None)
    if topic_id is None:
        return None
    text = str(topic_id)
    # an all-zero id (the broker has none) shows as AAAAAAAAAAAAAAAAAAAAAA
    return None if not text or set(text) <= {"A", "="} else text
