"""Fencing: at most one owner writes a partition at any time.

The coordinator gives each assignment of a partition an epoch. The owner holds a *lease* for
(partition, epoch) that it renews with the coordinator; it checks the lease before it publishes
or commits a batch. To move a partition the coordinator bumps the epoch (renewals of the old
epoch are refused from then on) and lets the new owner write only once every lease of the old
epoch has expired. A lease's expiry is counted from when its renewal was *sent*, so the owner's
view of its lease never outlasts the coordinator's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from goka_ray.errors import FencedError

__all__ = ["EpochTable", "Lease"]

logger = logging.getLogger(__name__)

#: renew(partition, epoch) -> True (renewed), False (refused: fenced); raises if unreachable
Renew = Callable[[int, int], bool]


class Lease:
    """The owner's side: a time-bound right to write ``partition`` under ``epoch``."""

    def __init__(
        self,
        partition: int,
        epoch: int,
        renew: Renew,
        duration: float = 6.0,
        *,
        stopped: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.partition = partition
        self.epoch = epoch
        self.duration = duration
        self._renew = renew
        self._stopped = stopped
        self._clock = clock
        self._expires = float("-inf")
        self._lock = threading.Lock()

    @property
    def valid(self) -> bool:
        return self._clock() < self._expires

    def check(self) -> None:
        """Return if the lease is valid (renewing it when half used); raise FencedError if the
        coordinator refused it; wait while the coordinator is unreachable and the lease expired.
        """
        with self._lock:
            while True:
                now = self._clock()
                if now < self._expires - self.duration / 2:
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
                    time.sleep(0.2)
                    continue
                if not renewed:
                    self._expires = float("-inf")
                    raise FencedError(
                        f"partition {self.partition}: epoch {self.epoch} is no longer current"
                    )
                self._expires = sent + self.duration
                return


class EpochTable:
    """The coordinator's side: the current epoch of each partition, and when it may be used."""

    def __init__(
        self, lease_duration: float = 6.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.lease_duration = lease_duration
        self._clock = clock
        self._epochs: dict[int, int] = {}
        self._usable_at: dict[int, float] = {}
        self._lock = threading.Lock()

    def current(self, partition: int) -> int:
        return self._epochs.get(partition, 0)

    def renew(self, partition: int, epoch: int) -> bool:
        """Whether ``epoch`` is still the current epoch of ``partition``."""
        return self._epochs.get(partition) == epoch

    def bump(self, partition: int, *, fresh: bool = False) -> int:
        """Start a new epoch for ``partition``; older leases can no longer be renewed.

        ``fresh``: the partition never had an owner, so there is no lease to wait out.
        """
        with self._lock:
            epoch = self._epochs.get(partition, 0) + 1
            self._epochs[partition] = epoch
            wait = 0.0 if fresh else self.lease_duration
            self._usable_at[partition] = self._clock() + wait
            return epoch

    def released(self, partition: int) -> None:
        """The previous owner confirmed it stopped: the new epoch is usable at once."""
        with self._lock:
            self._usable_at[partition] = self._clock()

    def adopt(self, partition: int, epoch: int) -> None:
        """Take over an epoch seen on a live owner (after the coordinator restarted)."""
        with self._lock:
            if epoch >= self._epochs.get(partition, 0):
                self._epochs[partition] = epoch
                self._usable_at.setdefault(partition, self._clock())

    def wait_usable(self, partition: int) -> float:
        """Seconds until every lease of the previous epoch of ``partition`` has expired."""
        return max(0.0, self._usable_at.get(partition, 0.0) - self._clock())

    def epochs(self) -> dict[int, int]:
        return dict(self._epochs)
