"""PartitionStats: the one record of what happened in one partition of a processor group.

The core counts into it while it processes (per batch in ``BatchResult.stats``, added to the
partition's record), the runner adds what it recovered and the gauges it knows (offsets, lag,
keys), and every status that reports a partition (the runner's ``RunnerStatus``, the
coordinator's ``PartitionStatus``, the metrics) carries a copy of it instead of copying its
fields one by one. :class:`StatsFields` (and :class:`CounterFields`) give those carriers the
record's fields as attributes.

Invariants: counters only grow while a partition's runner lives (a new runner starts at zero;
metrics turn snapshots into increments); a batch that is discarded before it was published
is subtracted again (:meth:`PartitionStats.subtract`), so re-processing it does not count it
twice; copies handed to other threads are never mutated.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["COUNTERS", "CounterFields", "PartitionStats", "StatsFields"]


@dataclass
class PartitionStats:
    """Counters since the partition's runner (or core) started, and its current gauges.

    ``emitted`` counts the callbacks' emits and loopbacks (dead letters are counted by
    ``dead_lettered`` only); ``table_writes`` counts changelog records, i.e. the coalesced
    writes of each batch. ``callback_errors`` counts the messages whose callback raised and
    that the input's ``on_error`` policy skipped or dead-lettered, ``unproducible`` those
    that made a record Kafka refuses, ``null_keys`` those without a key that the input's
    ``null_key`` policy skipped or dead-lettered (all are also counted in ``skipped`` or
    ``dead_lettered``; the rest of those are decode errors and tombstones). ``visited``
    counts the keys visitors ran for; ``recovered`` the changelog records applied to the
    partition's tables (recovery, hand-over, standby); ``aborted_skipped`` the changelog
    records of aborted transactions recovery left out (brokers that hand them to
    read_committed consumers; exactly-once only).
    """

    processed: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    callback_errors: int = 0
    unproducible: int = 0
    null_keys: int = 0
    visited: int = 0
    emitted: int = 0
    table_writes: int = 0
    recovered: int = 0
    aborted_skipped: int = 0
    #: gauges: the next offset to process per input topic, messages behind the end of each
    #: input topic (from the last fetch), keys in the partition's table
    offsets: dict[str, int] = field(default_factory=dict)
    lag: dict[str, int] = field(default_factory=dict)
    keys: int = 0

    def add(self, other: PartitionStats) -> None:
        """Add ``other``'s counters (a batch's) to these."""
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def subtract(self, other: PartitionStats) -> None:
        """Take back ``other``'s counters (a batch discarded before it was published)."""
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) - getattr(other, name))

    def copy(self, **gauges: Any) -> PartitionStats:
        """A snapshot, with ``gauges`` (offsets, lag, keys) set."""
        snapshot = dataclasses.replace(self, offsets=dict(self.offsets), lag=dict(self.lag))
        for name, value in gauges.items():
            setattr(snapshot, name, value)
        return snapshot

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: the counters of a PartitionStats (the fields that are added up)
COUNTERS = tuple(
    f.name for f in dataclasses.fields(PartitionStats) if f.name not in ("offsets", "lag", "keys")
)


class CounterFields:
    """The counters of a carried :class:`PartitionStats` (``self.stats``) as attributes:
    ``result.processed`` is ``result.stats.processed``."""

    stats: PartitionStats

    @property
    def processed(self) -> int:
        return self.stats.processed

    @property
    def skipped(self) -> int:
        return self.stats.skipped

    @property
    def dead_lettered(self) -> int:
        return self.stats.dead_lettered

    @property
    def callback_errors(self) -> int:
        return self.stats.callback_errors

    @property
    def unproducible(self) -> int:
        return self.stats.unproducible

    @property
    def null_keys(self) -> int:
        return self.stats.null_keys

    @property
    def visited(self) -> int:
        return self.stats.visited


class StatsFields(CounterFields):
    """Every field of a carried :class:`PartitionStats` (``self.stats``) as an attribute, for
    the records that report a partition: ``status.keys`` is ``status.stats.keys``."""

    @property
    def emitted(self) -> int:
        return self.stats.emitted

    @property
    def table_writes(self) -> int:
        return self.stats.table_writes

    @property
    def recovered(self) -> int:
        return self.stats.recovered

    @property
    def aborted_skipped(self) -> int:
        return self.stats.aborted_skipped

    @property
    def offsets(self) -> dict[str, int]:
        return self.stats.offsets

    @property
    def lag(self) -> dict[str, int]:
        return self.stats.lag

    @property
    def keys(self) -> int:
        return self.stats.keys
