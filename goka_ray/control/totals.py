"""Per-partition message counts over every owner a partition had (no Ray, no Kafka).

A partition runner counts the messages it processed, skipped and dead-lettered since it
started; a move, a failover or a restart starts a new runner at 0. The coordinator keeps
the totals: every runner (an owner: actor and epoch) contributes the highest counts it
reported, and once the partition has a new owner the counts of the earlier ones are settled
into a base, which a store keeps across coordinator restarts.

Invariants:
- A runner's counts only grow, so the highest reported ones are its latest.
- A total never goes down while the coordinator lives; a message processed again after a
  failover (at-least-once) is counted again, as it ran through a callback again.
- Settled counts are written to the store (when there is one) before they leave memory.
  What owners that were not adopted after a coordinator restart processed since the last
  settlement is not counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from goka_ray.control.status import PartitionStatus

__all__ = ["Counts", "PartitionTotals", "TotalsStore"]


@dataclass(frozen=True)
class Counts:
    """Messages processed, skipped and dead-lettered."""

    processed: int = 0
    skipped: int = 0
    dead_lettered: int = 0

    @classmethod
    def of(cls, status: PartitionStatus) -> Counts:
        return cls(status.processed, status.skipped, status.dead_lettered)

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.processed + other.processed,
            self.skipped + other.skipped,
            self.dead_lettered + other.dead_lettered,
        )

    def highest(self, other: Counts) -> Counts:
        return Counts(
            max(self.processed, other.processed),
            max(self.skipped, other.skipped),
            max(self.dead_lettered, other.dead_lettered),
        )


class TotalsStore(Protocol):
    """Where settled counts outlive the coordinator (Ray's GCS key-value store)."""

    def load_totals(self) -> Mapping[int, Counts]: ...

    def save_totals(self, totals: Mapping[int, Counts]) -> None: ...


Owner = tuple[str, int]
"""A runner: (actor name, epoch)."""


class PartitionTotals:
    """The counts of every partition over all its owners (see the module docstring)."""

    def __init__(self, store: TotalsStore | None = None) -> None:
        self._store = store
        self._settled: dict[int, Counts] = dict(store.load_totals()) if store else {}
        self._owners: dict[int, dict[Owner, Counts]] = {}

    def observe(self, actor: str, status: PartitionStatus) -> None:
        """A runner's report (standby copies count nothing)."""
        if status.epoch <= 0:
            return
        owners = self._owners.setdefault(status.partition, {})
        key = (actor, status.epoch)
        owners[key] = owners.get(key, Counts()).highest(Counts.of(status))

    def settle(self, partition: int, keep: Owner) -> None:
        """``keep`` now owns ``partition``: settle what every earlier owner counted."""
        owners = self._owners.get(partition, {})
        earlier = [k for k in owners if k != keep]
        if not earlier:
            return
        settled = self._settled.get(partition, Counts())
        for key in earlier:
            settled = settled + owners.pop(key)
        self._settled[partition] = settled
        if self._store is not None:
            self._store.save_totals(self._settled)

    def total(self, partition: int) -> Counts:
        """Everything ``partition`` counted since the group started."""
        total = self._settled.get(partition, Counts())
        for counts in self._owners.get(partition, {}).values():
            total = total + counts
        return total

    def clear(self) -> None:
        """A new start of the group: count from zero (and forget the stored counts)."""
        self._settled.clear()
        self._owners.clear()
        if self._store is not None:
            self._store.save_totals({})
