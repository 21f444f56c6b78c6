"""Fencing: at most one owner writes a partition at any time, across coordinator restarts.

The coordinator gives each assignment of a partition to an actor an *epoch*. The owner holds
a *lease* on (partition, epoch) that it renews with the coordinator and checks before it
writes. Invariants (the coordinator's :class:`EpochTable`, the owner's :class:`Lease`):

1. Epochs of a partition strictly increase, across coordinator restarts and even whole-cluster
   restarts: a new epoch is one more than the highest epoch of the durable record
   (:class:`EpochStore`, which outlives the coordinator) and of every floor given to
   :meth:`EpochTable.restore` (the changelog's highest epoch header outlives the cluster). It
   is written to the record *before* it is handed to anyone; a write that fails hands out
   nothing.
2. At most one epoch of a partition is *current*, and it belongs to one owner (an actor
   name). Making a newer epoch current is recorded first, and from then on every renewal of an
   older epoch, or of the current epoch by anyone but its owner, is refused.
3. A lease is valid for ``duration`` seconds counted on the owner's monotonic clock from when
   its last accepted renewal was *sent*, so the owner's lease always ends before the
   coordinator's count of it (which starts when it stopped accepting renewals) does.
4. An owner writes (produces, commits offsets, starts transactions) only right after a check
   of a valid lease. A refused renewal fences it for good (:class:`~goka_ray.errors.
   FencedError`); an unreachable coordinator cannot extend a lease, so an owner whose lease ran
   out waits without writing.
5. A restarted coordinator accepts renewals only from owners it adopted (whose epoch and name
   the record confirms); it does not know which leases are outstanding, so a partition it
   gives a new owner waits out a full lease first, unless the old owner's end is confirmed
   (see :mod:`goka_ray.control.adoption`).
6. The table knows until when the last lease it granted on a partition's current epoch can be
   valid: ``duration`` after it *accepted* that renewal (after the owner sent it, so the
   owner's own count ends first, clock rates being equal). When a newer epoch becomes
   current, that end is kept as the *superseded lease end* (the latest end of a lease on
   any older epoch): the new owner need not wait longer, however late the old owner's loss
   is noticed. A lease granted by an earlier coordinator is unknown: it ends at the latest
   ``duration`` after that coordinator could last grant one (``granted_before`` given to
   :meth:`EpochTable.restore`: when this coordinator started, for one Ray restarted after
   the old one died), else ``duration`` after the epoch was superseded.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from goka_ray.errors import FencedError, GokaRayError

__all__ = [
    "LEASE_DURATION",
    "EpochRecord",
    "EpochStore",
    "EpochTable",
    "Lease",
    "MemoryEpochStore",
    "decode_records",
    "encode_records",
]

logger = logging.getLogger(__name__)

#: seconds a lease is valid after its renewal: also the longest a new owner waits for the lease
#: of an owner whose node was lost (the renewal comes every half lease while it writes)
LEASE_DURATION = 3.0

#: renew(partition, epoch) -> True (renewed), False (refused: fenced); raises if unreachable
Renew = Callable[[int, int], bool]


class Lease:
    """The owner's side: a time-bound right to write ``partition`` under ``epoch``."""

    def __init__(
        self,
        partition: int,
        epoch: int,
        renew: Renew,
        duration: float = LEASE_DURATION,
        *,
        stopped: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.partition = partition
        self.epoch = epoch
        self.duration = duration
        self._renew = renew
        self._stopped = stopped
        self._clock = clock
        self._sleep = sleep
        self._expires = float("-inf")
        self._lock = threading.Lock()
        #: the coordinator refused a renewal: this owner is fenced for good
        self.refused = False

    @property
    def valid(self) -> bool:
        return not self.refused and self._clock() < self._expires

    def check(self) -> None:
        """Return if the lease is valid (renewing it when half used); raise FencedError if the
        coordinator refused it; wait while the coordinator is unreachable and the lease expired
        (raise FencedError instead once ``stopped()`` says the owner is stopping).
        """
        with self._lock:
            while True:
                if self.refused:
                    raise FencedError(
                        f"partition {self.partition}: epoch {self.epoch} is no longer current"
                    )
                if self._clock() < self._expires - self.duration / 2:
                    return
                sent = self._clock()
                try:
                    renewed = self._renew(self.partition, self.epoch)
                except Exception as exc:  # coordinator restarting or unreachable
                    if self._clock() < self._expires:
                        return
                    if self._stopped():
                        raise FencedError(
                            f"partition {self.partition}: lease expired while stopping"
                        ) from exc
                    logger.warning(
                        "partition %d: cannot renew lease (epoch %d), waiting: %s",
                        self.partition,
                        self.epoch,
                        exc,
                    )
                    self._sleep(0.2)
                    continue
                if not renewed:
                    self._expires = float("-inf")
                    self.refused = True
                    continue  # raises above
                self._expires = sent + self.duration
                return


@dataclass(frozen=True)
class EpochRecord:
    """The durable facts about one partition's epochs."""

    #: the highest epoch ever handed out (0: none)
    issued: int = 0
    #: the epoch whose owner may write (0: none yet)
    current: int = 0
    #: the actor that holds the current epoch
    owner: str | None = None

    def to_json(self) -> list[object]:
        return [self.issued, self.current, self.owner]

    @classmethod
    def from_json(cls, data: object) -> EpochRecord:
        if not isinstance(data, list) or len(data) != 3:
            raise ValueError(f"not an epoch record: {data!r}")
        issued, current, owner = data
        return cls(int(issued), int(current), None if owner is None else str(owner))


class EpochStore(Protocol):
    """Where the coordinator records epochs so that they outlive it."""

    def load_epochs(self) -> dict[int, EpochRecord]:
        """Every partition's record ({} if nothing was recorded yet)."""
        ...

    def save_epochs(self, records: Mapping[int, EpochRecord]) -> None:
        """Replace the records durably; raise if that cannot be done."""
        ...


class MemoryEpochStore:
    """An :class:`EpochStore` in memory (tests, and a coordinator that nothing outlives)."""

    def __init__(self) -> None:
        self.data: bytes | None = None
        self.saves = 0

    def load_epochs(self) -> dict[int, EpochRecord]:
        return decode_records(self.data)

    def save_epochs(self, records: Mapping[int, EpochRecord]) -> None:
        self.data = encode_records(records)
        self.saves += 1


def encode_records(records: Mapping[int, EpochRecord]) -> bytes:
    return json.dumps({str(p): r.to_json() for p, r in sorted(records.items())}).encode()


def decode_records(data: bytes | None) -> dict[int, EpochRecord]:
    if not data:
        return {}
    raw = json.loads(data)
    if not isinstance(raw, dict):
        raise ValueError(f"not a table of epoch records: {data[:80]!r}")
    return {int(p): EpochRecord.from_json(r) for p, r in raw.items()}


class EpochTable:
    """The coordinator's side: the epochs of each partition, who holds the current one, and
    the lease renewals (see the module docstring for the invariants it keeps).

    Thread-safe: renewals arrive on other threads than the coordinator's decisions.
    """

    def __init__(
        self,
        lease_duration: float = LEASE_DURATION,
        clock: Callable[[], float] = time.monotonic,
        store: EpochStore | None = None,
    ) -> None:
        self.lease_duration = lease_duration
        self._clock = clock
        self._store: EpochStore = store if store is not None else MemoryEpochStore()
        self._records: dict[int, EpochRecord] = {}
        self._floor: dict[int, int] = {}
        #: per partition, until when a lease on its current epoch may be valid (None: no
        #: lease was granted on it; absent: unknown, it may have been granted by an earlier
        #: coordinator)
        self._lease_end: dict[int, float | None] = {}
        #: per partition, when the last lease on an epoch older than the current may end
        self._superseded: dict[int, float | None] = {}
        self._granted_before: float | None = None
        self._lock = threading.Lock()

    def restore(
        self, floors: Mapping[int, int] | None = None, *, granted_before: float | None = None
    ) -> dict[int, EpochRecord]:
        """Load the durable record and raise each partition's floor to ``floors`` (e.g. the
        highest epoch header in its changelog). ``granted_before``: no earlier coordinator
        granted a lease after this time (this table's clock); None: it may have until now.
        Returns the records as loaded."""
        with self._lock:
            self._granted_before = granted_before
            self._records = self._store.load_epochs()
            # leases on a current epoch with an owner may have been granted before: unknown
            self._lease_end = {p: None for p, r in self._records.items() if r.owner is None}
            for p, epoch in (floors or {}).items():
                self._floor[p] = max(self._floor.get(p, 0), epoch)
            return dict(self._records)

    def record(self, partition: int) -> EpochRecord:
        return self._records.get(partition, EpochRecord())

    def current(self, partition: int) -> int:
        return self.record(partition).current

    def owner(self, partition: int) -> str | None:
        return self.record(partition).owner

    def highest(self, partition: int) -> int:
        """The highest epoch known for ``partition`` (issued, current or floor)."""
        rec = self.record(partition)
        return max(rec.issued, rec.current, self._floor.get(partition, 0))

    def issue(self, partition: int) -> int:
        """A new epoch for ``partition``, higher than any known, recorded before it is returned."""
        with self._lock:
            rec = self.record(partition)
            epoch = self.highest(partition) + 1
            self._save(partition, EpochRecord(epoch, rec.current, rec.owner))
            return epoch

    def make_current(self, partition: int, epoch: int, owner: str) -> None:
        """From now on only ``owner`` may renew, and only for ``epoch`` (recorded first)."""
        with self._lock:
            rec = self.record(partition)
            if epoch <= rec.current:
                raise GokaRayError(
                    f"partition {partition}: epoch {epoch} cannot follow the current epoch "
                    f"{rec.current}; epochs only increase"
                )
            self._save(partition, EpochRecord(max(rec.issued, epoch), epoch, owner))
            if partition in self._lease_end or not rec.current:
                ends = self._lease_end.get(partition)
            else:  # granted by an earlier coordinator, if at all
                ends = self.unknown_lease_end()
            older = self._superseded.get(partition)
            if older is not None and (ends is None or older > ends):
                ends = older
            self._superseded[partition] = ends
            self._lease_end[partition] = None  # the new owner holds no lease yet

    def superseded_lease_end(self, partition: int) -> float | None:
        """Until when (this table's clock) a lease on an epoch older than the current one
        may still be valid; None if no lease on one was granted (invariant 6)."""
        return self._superseded.get(partition)

    def unknown_lease_end(self) -> float:
        """The latest end of a lease an earlier coordinator may have granted (invariant 6)."""
        since = self._clock() if self._granted_before is None else self._granted_before
        return since + self.lease_duration

    def adopt(self, partition: int, epoch: int, owner: str) -> bool:
        """After a restart: accept a live owner found running ``partition`` under ``epoch``.

        True if the record confirms it (its current epoch and owner), or if nothing is
        recorded and ``epoch`` is no lower than any known epoch; False for a stale owner.
        """
        with self._lock:
            rec = self.record(partition)
            if rec.current:
                return (rec.current, rec.owner) == (epoch, owner)
            if epoch < self.highest(partition):
                return False
            self._save(partition, EpochRecord(max(rec.issued, epoch), epoch, owner))
            return True

    def release(self, partition: int) -> None:
        """The current owner confirmed it stopped for good (the group stopped): nobody holds a
        lease on ``partition`` any more (recorded; the epochs stay as they are)."""
        with self._lock:
            rec = self.record(partition)
            if rec.owner is not None:
                self._save(partition, EpochRecord(rec.issued, rec.current, None))
            self._lease_end[partition] = None

    def renew(self, partition: int, epoch: int, owner: str | None) -> bool:
        """Whether ``owner`` still holds the current epoch ``epoch`` of ``partition``; if so,
        its lease is valid ``lease_duration`` seconds from now (invariant 6)."""
        with self._lock:
            rec = self._records.get(partition)
            if rec is None or rec.current != epoch or rec.owner != owner:
                return False
            self._lease_end[partition] = self._clock() + self.lease_duration
            return True

    def _save(self, partition: int, record: EpochRecord) -> None:
        records = {**self._records, partition: record}
        self._store.save_epochs(records)  # durable first: a failure changes nothing
        self._records = records
