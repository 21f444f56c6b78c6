"""ChangelogFollower: keeps table partitions current from their changelog partitions.

One class does this for every reader of a table: a partition runner (its own table while it
recovers or stands by, joined tables, lookup copies), standby copies, and view actors. It
feeds core :class:`~goka_ray.core.tables.TablePartition` objects, the one place that applies a
changelog record (Goka's PartitionTable plays this role for processors, joins and views).

Invariants:

- Only the thread that calls :meth:`ChangelogFollower.poll` / :meth:`~ChangelogFollower.recover`
  / :meth:`~ChangelogFollower.follow` drives the follower and writes the table partitions it
  follows; other threads may read the tables' storages and the counters.
- Each poll applies each partition's records and the next offset to read in one atomic storage
  batch (:meth:`TablePartition.apply_changelog`), so a stored offset always says exactly what
  the copy holds; records below it (delivered again after a re-assignment) are never applied
  twice.
- A partition is *at its end* when ListOffsets shows it empty (start == end, correct on every
  broker), or when the consumer reported partition EOF since it was assigned, or when the
  position reached both the end listed when the pass began and the high watermark of the last
  fetch response. The listed end alone is never trusted: some brokers under-report it (Tansu
  answers the base offset of the last record batch + 1), and a partition written continuously
  may never report EOF on them.
- A copy whose changelog was recreated (a new topic id, an offset beyond the end or below the
  start of the log, offset out of range) is reloaded from the beginning: in place (cleared,
  then re-read), or aside (into a fresh storage that replaces the old one once it reached the
  end; readers keep the old copy until then).
- A lost broker (connection errors, fatal consumer errors, the topic gone) ends the session:
  the consumer is closed and a new one connects after a backoff (0.5 s doubling to 10 s, back to
  0.5 s once a session reached the end). Nothing applied is lost: a session resumes at the
  stored offsets.
- An update callback that raises fails the poll (``on_update_error="fail"``, a
  :class:`~goka_ray.errors.ProcessingError` naming the record) or skips the record
  (``"skip"``); never a half-applied batch.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from goka_ray.core.messages import Headers
from goka_ray.core.storage import Storage
from goka_ray.core.tables import ChangelogRecord, TablePartition
from goka_ray.kafka.clients import client_config, consume_available, make_consumer

__all__ = [
    "BACKOFF_MAX",
    "BACKOFF_START",
    "BrokerLost",
    "ChangelogFollower",
    "FollowerState",
    "offset_reset_reason",
]

logger = logging.getLogger(__name__)

BACKOFF_START = 0.5  #: seconds before the first reconnect attempt
BACKOFF_MAX = 10.0  #: longest wait between reconnect attempts
PROBE_TIMEOUT = 5.0  #: how long one broker request of a (re)connect may take (seconds)
LAG_INTERVAL = 2.0  #: how often the lag figures are refreshed (seconds)

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

TopicPart = tuple[str, int]


class FollowerState(enum.StrEnum):
    """Where a follower is: the states a view reports (Goka's PartitionTable states)."""

    #: no session with the broker yet, or the last one was lost (the copies are kept)
    CONNECTING = "connecting"
    #: reading the changelogs to their end (or reloading a recreated one)
    RECOVERING = "recovering"
    #: every partition reached its end; following what is written next
    RUNNING = "running"


class BrokerLost(Exception):
    """The follower lost the broker (or never reached it); it reconnects after a backoff."""


def offset_reset_reason(next_offset: int | None, low: int, high: int) -> str | None:
    """Why a partition read up to ``next_offset`` must be reloaded, given the log's watermarks.

    ``low``/``high`` come from a fetch response (negative: not known yet). An offset beyond the
    high watermark means the changelog was recreated (a memory-only broker restarted, or the
    topic was deleted and created again) or truncated; one below the log start offset means
    records were deleted before this copy read them. Either way the copy is stale.
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
            f"(records were deleted before this copy read them)"
        )
    return None


#: ``keep(headers)``: whether a changelog record is applied (e.g. not from an aborted
#: transaction); records it refuses are counted in ``ChangelogFollower.filtered``
RecordFilter = Callable[[Headers | None], bool]


@dataclass
class _Followed:
    """One followed changelog partition."""

    table: TablePartition
    keep: RecordFilter | None = None
    #: the copy being rebuilt aside while ``table`` is still served (reload with a factory)
    loading: TablePartition | None = None
    #: reached its end in the current pass
    at_end: bool = False
    #: the end ListOffsets reported when the pass began (a lower bound of the real end)
    target: int = -1

    @property
    def writing(self) -> TablePartition:
        """The copy records go to: the reload's, or the served one."""
        return self.loading if self.loading is not None else self.table


class ChangelogFollower:
    """Reads changelog partitions into table partitions: recover to the end, then follow.

    ``group_id`` names the consumer (it never joins a group or commits). ``consumer_config``
    adds librdkafka settings (``isolation.level=read_committed`` for exactly-once readers).
    ``on_update_error`` is the policy for an update callback that raises: ``"fail"`` raises a
    ProcessingError from :meth:`poll`, ``"skip"`` logs and leaves the record out.
    ``fresh_storage(table)``, if given, makes the storage a reload is built in (aside); without
    it a reload clears the table's storage and reads it again in place. Each session first
    checks the topics with an admin client (a new topic id: the topic was recreated and is
    reloaded; a missing topic or partition: wait and retry). ``name`` appears in log lines.
    """

    def __init__(
        self,
        brokers: str,
        *,
        group_id: str,
        consumer_config: Mapping[str, Any] | None = None,
        on_update_error: Literal["fail", "skip"] = "fail",
        fresh_storage: Callable[[TablePartition], Storage] | None = None,
        batch_size: int = 20000,
        poll_timeout: float = 0.2,
        name: str = "",
    ) -> None:
        self.brokers = brokers
        self.group_id = group_id
        self.consumer_config = dict(consumer_config or {})
        self.on_update_error = on_update_error
        self.fresh_storage = fresh_storage
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.name = name or group_id
        self._parts: dict[TopicPart, _Followed] = {}
        self._consumer: Consumer | None = None
        self._admin: AdminClient | None = None
        self._lost: list[str] = []
        self._topic_ids: dict[str, str] = {}
        self._retry_at = 0.0
        self._delay = BACKOFF_START
        self._pass_pending = True
        self._warned: dict[str, float] = {}
        self._last_log = 0.0
        self.state = FollowerState.CONNECTING
        #: why the follower is connecting (None while connected)
        self.error: str | None = None
        #: records applied since the follower was made (reloads included)
        self.applied = 0
        #: records a filter left out (``keep`` returned False)
        self.filtered = 0
        #: sessions lost (or never established) and started over
        self.reconnects = 0
        #: partitions reloaded from the beginning
        self.reloads = 0
        #: records behind the end of each partition, as of the last fetch (refreshed every
        #: LAG_INTERVAL seconds; safe to read from any thread)
        self.lags: dict[TopicPart, int] = {}
        self._lags_at = 0.0

    # -- what is followed -----------------------------------------------------------------------

    @property
    def tables(self) -> dict[TopicPart, TablePartition]:
        """The followed table partitions (the served copies) by (topic, partition)."""
        return {tp: f.table for tp, f in self._parts.items()}

    def add(self, table: TablePartition, *, keep: RecordFilter | None = None) -> None:
        """Follow ``table`` from its changelog partition, from its stored offset on."""
        self._parts[(table.topic, table.partition)] = _Followed(table, keep)
        self._pass_pending = True  # the next poll assigns it

    def remove(self, topic: str, partition: int) -> None:
        """Stop following one partition (its table is left as it is)."""
        if self._parts.pop((topic, partition), None) is None:
            return
        if not self._parts:
            self.close()
        elif self._consumer is not None:
            self._assign()

    @property
    def caught_up(self) -> bool:
        """Every followed partition reached its end in the current pass (and no reload is
        still building)."""
        return not self._pass_pending and all(
            f.at_end and f.loading is None for f in self._parts.values()
        )

    def offsets(self) -> dict[TopicPart, int]:
        """The next offset to read of each partition that has read anything (of the copy
        being reloaded, during a reload)."""
        out = {}
        for tp, f in list(self._parts.items()):
            offset = f.writing.offset
            if offset is not None:
                out[tp] = offset
        return out

    def _refresh_lags(self, consumer: Consumer) -> None:
        lags: dict[TopicPart, int] = {}
        for tp, f in self._parts.items():
            try:
                _, high = consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
            except KafkaException:  # no fetch response yet
                continue
            if high >= 0:
                lags[tp] = max(0, high - (f.writing.offset or 0))
        self.lags = lags

    # -- driving it -----------------------------------------------------------------------------

    def recover(self, stop: threading.Event | None = None) -> int:
        """Read every followed partition to its end (see the module's invariants); returns the
        records applied. Returns early if ``stop`` is set. A lost broker is reconnected."""
        if not self._parts:
            return 0
        self._pass_pending = True
        applied = 0
        self._last_log = time.monotonic()
        while not (stop is not None and stop.is_set()):
            applied += self.poll(self.poll_timeout)
            if self.caught_up:
                break
            now = time.monotonic()
            if now - self._last_log > 5:
                self._last_log = now
                left = sum(1 for f in self._parts.values() if not f.at_end)
                logger.info(
                    "%s: recovering: %d records so far, %d partitions to go",
                    self.name,
                    applied,
                    left,
                )
        return applied

    def poll(self, timeout: float) -> int:
        """One step: connect if due, apply what arrived within ``timeout`` seconds, check the
        ends and reloads. Returns the records applied. A lost broker ends the session (the
        next poll after the backoff reconnects); other errors propagate. Following nothing,
        it waits ``timeout`` as a poll that received nothing would (a caller's loop of polls,
        e.g. a standby of a group without a table waiting to be promoted, must not spin)."""
        if not self._parts:
            if timeout > 0:
                time.sleep(timeout)
            return 0
        if self._consumer is None:
            wait = self._retry_at - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, timeout))
                return 0
            try:
                self._connect()
            except BrokerLost as exc:
                self._session_lost(str(exc))
                return 0
        try:
            if self._pass_pending:
                self._begin_pass()
                if self.caught_up:  # every log empty at the copy's end: no fetch to wait for
                    self._note_caught_up()
                    return 0
            return self._step(timeout)
        except BrokerLost as exc:
            self._session_lost(str(exc))
            return 0

    def follow(self, stop: threading.Event) -> None:
        """Recover, then follow until ``stop`` is set (a view's or standby's reader thread).

        Any error of a session (not only a lost broker) ends it and reconnects after the
        backoff: a reader thread keeps its copy and tries again rather than die.
        """
        while not stop.is_set():
            try:
                self.poll(self.poll_timeout)
            except Exception as exc:
                logger.warning("%s: the changelog reader failed", self.name, exc_info=True)
                self._session_lost(f"the changelog reader failed: {exc!r}")

    def close(self) -> None:
        """Close the consumer (the tables are left open: their owners close them)."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                consumer.close()
            except Exception as exc:  # closing must not fail the caller
                logger.debug("%s: closing the consumer failed: %s", self.name, exc)

    # -- sessions -------------------------------------------------------------------------------

    def _connect(self) -> None:
        self._probe_topics()

        def on_error(err: KafkaError) -> None:  # called from consume(), on this thread
            if err.fatal() or err.code() in _CONNECTION_ERRORS:
                self._lost.append(f"{err.name()}: {err.str()}")
            else:
                self._warn(f"consumer error {err.name()}: {err.str()}")

        config = {**self.consumer_config, "error_cb": on_error, "auto.offset.reset": "error"}
        self._lost = []
        self._consumer = make_consumer(self.brokers, self.group_id, config=config)
        if self.state == FollowerState.CONNECTING:
            self.state = FollowerState.RECOVERING
        self._pass_pending = True

    def _session_lost(self, reason: str) -> None:
        self.close()
        self.state = FollowerState.CONNECTING
        self.error = reason
        self.reconnects += 1
        keys = sum(len(f.table) for f in self._parts.values())
        logger.warning(
            "%s: %s; keeping the copy (%d keys), reconnecting in %.1fs",
            self.name,
            reason,
            keys,
            self._delay,
        )
        self._retry_at = time.monotonic() + self._delay
        self._delay = min(self._delay * 2, BACKOFF_MAX)

    def _probe_topics(self) -> None:
        """Check the broker answers and the topics are as expected; reload recreated ones."""
        admin = self._admin_client()
        topics = sorted({topic for topic, _ in self._parts})
        try:
            futures = admin.describe_topics(TopicCollection(topics), request_timeout=PROBE_TIMEOUT)
        except Exception as exc:
            raise BrokerLost(f"cannot reach Kafka at {self.brokers}: {exc}") from None
        for topic in topics:
            try:
                description = futures[topic].result(timeout=PROBE_TIMEOUT + 1)
            except Exception as exc:
                text = str(exc)
                if "UNKNOWN_TOPIC" in text:
                    raise BrokerLost(
                        f"the changelog topic {topic!r} does not exist at {self.brokers} "
                        f"(deleted, or the broker lost it); waiting for it to be created again"
                    ) from None
                raise BrokerLost(f"cannot reach Kafka at {self.brokers}: {text}") from None
            present = {p.id for p in description.partitions}
            missing = sorted(p for t, p in self._parts if t == topic and p not in present)
            if missing:
                raise BrokerLost(
                    f"the changelog topic {topic!r} has no partition(s) {missing} any more "
                    f"({len(present)} now); restart the reader to match the new count"
                )
            topic_id = _topic_id(description)
            known = self._topic_ids.get(topic)
            if topic_id is not None and known is not None and topic_id != known:
                for tp in [tp for tp in self._parts if tp[0] == topic]:
                    self._start_reload(
                        tp, f"the changelog topic was recreated (topic id {known} -> {topic_id})"
                    )
            if topic_id is not None:
                self._topic_ids[topic] = topic_id

    def _listed_offsets(self) -> dict[TopicPart, tuple[int, int]]:
        """Each partition's start and end offsets as ListOffsets reports them, counting records
        of open transactions (read_uncommitted: some brokers report no end at all to a
        read_committed request while a transaction is open)."""
        admin = self._admin_client()
        parts = list(self._parts)
        out: dict[TopicPart, list[int]] = {tp: [-1, -1] for tp in parts}
        for i, spec in enumerate((OffsetSpec.earliest(), OffsetSpec.latest())):
            request = {TopicPartition(*tp): spec for tp in parts}
            try:
                futures = admin.list_offsets(
                    request,
                    isolation_level=IsolationLevel.READ_UNCOMMITTED,
                    request_timeout=PROBE_TIMEOUT,
                )
                for tp, future in futures.items():
                    out[(tp.topic, tp.partition)][i] = future.result(PROBE_TIMEOUT + 1).offset
            except Exception as exc:
                raise BrokerLost(
                    f"cannot list the offsets of {sorted(parts)} at {self.brokers}: {exc}"
                ) from None
        return {tp: (low, high) for tp, (low, high) in out.items()}

    def _admin_client(self) -> AdminClient:
        if self._admin is None:
            shared = {
                k: v for k, v in self.consumer_config.items() if k.startswith(_SHARED_PREFIXES)
            }
            self._admin = AdminClient(client_config(self.brokers, shared))
        return self._admin

    def _assign(self) -> None:
        assert self._consumer is not None
        assignment = []
        for (topic, partition), f in self._parts.items():
            offset = f.writing.offset
            assignment.append(
                TopicPartition(topic, partition, OFFSET_BEGINNING if offset is None else offset)
            )
        self._consumer.assign(assignment)

    def _begin_pass(self) -> None:
        """Start reading to the end: assign afresh (so partition EOF is reported again) and
        note each partition's listed end (a lower bound of the real end)."""
        self._pass_pending = False
        listed = self._listed_offsets()
        for tp, f in list(self._parts.items()):
            low, high = listed[tp]
            f.at_end = False
            f.target = high
            offset = f.writing.offset
            if low == high:  # an empty log: nothing to read, no fetch needed to know it
                if offset is None or offset == high:
                    f.at_end = True
                else:
                    self._start_reload(
                        tp,
                        f"its stored offset {offset} is outside the changelog, which holds no "
                        f"records (offsets {low}-{high}; recreated or truncated)",
                    )
        self._assign()

    # -- one step -------------------------------------------------------------------------------

    def _step(self, timeout: float) -> int:
        consumer = self._consumer
        assert consumer is not None
        messages = consume_available(consumer, self.batch_size, timeout)
        if self._lost:
            raise BrokerLost(f"lost the broker ({self._lost[0]})")
        batches, resets, eof = self._sort(messages)
        parts = self._parts
        applied = 0
        for tp, batch in batches.items():
            if tp not in resets and tp in parts:
                applied += self._apply(parts[tp], batch)
        resets.update(self._check_ends(consumer, eof, skip=resets))
        if resets:
            for tp, reason in sorted(resets.items()):
                self._start_reload(tp, reason)
            self._assign()
            return applied
        for f in parts.values():
            if f.loading is not None and f.at_end:
                self._finish_reload(f)
        now = time.monotonic()
        if now - self._lags_at > LAG_INTERVAL:
            self._lags_at = now
            self._refresh_lags(consumer)
        if self.caught_up:
            self._note_caught_up()
        return applied

    def _note_caught_up(self) -> None:
        """Every followed partition reached its end: from recovering to following."""
        if self.state != FollowerState.RUNNING:
            self.state = FollowerState.RUNNING
            self.error = None
            self._delay = BACKOFF_START
            logger.debug("%s: caught up with %s, following", self.name, sorted(self._parts))

    def _sort(
        self, messages: list[Any]
    ) -> tuple[dict[TopicPart, list[Any]], dict[TopicPart, str], set[TopicPart]]:
        """A poll's records by partition, the partitions to reload (and why), and those that
        reported their end. Raises BrokerLost for errors that mean the broker is gone."""
        batches: dict[TopicPart, list[Any]] = {}
        resets: dict[TopicPart, str] = {}
        eof: set[TopicPart] = set()
        for m in messages:
            err = m.error()
            tp = (m.topic(), m.partition())
            if err is None:
                batch = batches.get(tp)
                if batch is None:
                    batch = batches[tp] = []
                batch.append(m)
                continue
            code = err.code()
            if code == KafkaError._PARTITION_EOF:
                eof.add(tp)
            elif code in _OFFSET_RESET_ERRORS and tp[1] is not None and tp in self._parts:
                resets[tp] = f"its offset is out of range ({err.str()})"
            elif err.fatal() or code in _CONNECTION_ERRORS:
                raise BrokerLost(f"lost the broker ({err.name()}: {err.str()})")
            elif code in _TOPIC_GONE_ERRORS:
                raise BrokerLost(f"the changelog {tp[0]}[{tp[1]}] is gone ({err.str()})")
            else:
                self._warn(f"{tp[0]}[{tp[1]}]: {err.name()}: {err.str()}")
        return batches, resets, eof

    def _check_ends(
        self, consumer: Consumer, eof: set[TopicPart], *, skip: Mapping[TopicPart, str]
    ) -> dict[TopicPart, str]:
        """Mark the partitions that reached their end; returns those whose copy is stale
        against the last fetch's watermarks (and why)."""
        resets: dict[TopicPart, str] = {}
        for tp, f in self._parts.items():
            if tp in skip:
                continue
            try:
                low, high = consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
            except KafkaException:
                continue
            reason = offset_reset_reason(f.writing.offset, low, high)
            if reason is not None:
                resets[tp] = reason
            elif not f.at_end and (tp in eof or self._reached(consumer, tp, f, high)):
                f.at_end = True
        return resets

    @staticmethod
    def _reached(consumer: Consumer, tp: TopicPart, f: _Followed, high: int) -> bool:
        """Whether the position reached the pass's listed end and the last fetch's high
        watermark (transaction markers take offsets too: the consumer's position counts)."""
        if high < 0:
            return False  # no fetch response yet
        try:
            position: int = consumer.position([TopicPartition(*tp)])[0].offset
        except KafkaException:
            position = -1
        offset = f.writing.offset
        reached = max(offset if offset is not None else -1, position)
        return reached >= max(high, f.target)

    def _apply(self, f: _Followed, messages: list[Any]) -> int:
        """Apply one partition's records in order, and the offset after them, atomically."""
        target = f.writing
        expected = target.offset
        start = 0
        if expected is not None:  # a prefix delivered again after a re-assignment
            while start < len(messages) and messages[start].offset() < expected:
                start += 1
            if start == len(messages):
                return 0
        keep = f.keep
        rich = target.update is not None
        records: list[tuple[bytes | None, bytes | None] | ChangelogRecord] = []
        append = records.append
        for i in range(start, len(messages)):
            m = messages[i]
            if keep is not None and not keep(m.headers()):
                self.filtered += 1
                continue
            if rich:
                append(ChangelogRecord(m.key(), m.value(), m.offset(), m.headers()))
            else:
                append((m.key(), m.value()))
        n = target.apply_changelog(
            records, messages[-1].offset() + 1, on_update_error=self.on_update_error
        )
        self.applied += n
        return n

    # -- reloads --------------------------------------------------------------------------------

    def _start_reload(self, tp: TopicPart, reason: str) -> None:
        f = self._parts[tp]
        if f.loading is not None and f.loading.offset is None:
            return  # reloading from the beginning already
        self.reloads += 1
        if self.state == FollowerState.RUNNING:
            self.state = FollowerState.RECOVERING
        table = f.table
        if self.fresh_storage is None:
            logger.warning(
                "%s: reloading %s[%d] from the beginning: %s; discarding the copy (%d keys)",
                self.name,
                tp[0],
                tp[1],
                reason,
                len(table),
            )
            table.storage.clear()
        else:
            logger.warning(
                "%s: reloading %s[%d] from the beginning: %s; the previous copy is served "
                "until the reload has caught up",
                self.name,
                tp[0],
                tp[1],
                reason,
            )
            f.loading = TablePartition(
                table.topic,
                table.partition,
                self.fresh_storage(table),
                table.codec,
                update=table.update,
                group=table.group,
            )
        f.at_end = False

    def _finish_reload(self, f: _Followed) -> None:
        fresh = f.loading
        assert fresh is not None
        old = f.table.storage
        before = old.key_count()
        f.table.storage = fresh.storage
        f.loading = None
        old.close()
        logger.warning(
            "%s: %s[%d] reloaded (%d keys, %d before); serving the new copy",
            self.name,
            f.table.topic,
            f.table.partition,
            len(f.table),
            before,
        )

    def _warn(self, message: str) -> None:
        """Log ``message`` at WARNING, at most once per 10 s."""
        now = time.monotonic()
        if now - self._warned.get(message, -1e9) >= 10:
            self._warned[message] = now
            logger.warning("%s: %s", self.name, message)


def _topic_id(description: Any) -> str | None:
    """The topic's id as text, or None if the broker does not report one."""
    topic_id = getattr(description, "topic_id", None)
    if topic_id is None:
        return None
    text = str(topic_id)
    # an all-zero id (the broker has none) shows as AAAAAAAAAAAAAAAAAAAAAA
    return None if not text or set(text) <= {"A", "="} else text
