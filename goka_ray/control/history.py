"""A short history of each group's throughput and lag, from successive status samples.

The web monitor samples every group's ``GroupStatus`` every few seconds and keeps the last
minutes here, so a page can draw them as charts. Throughput is derived from the partitions'
``processed`` counters: messages processed between two samples divided by the seconds between
them. A counter that went down (a partition that moved to a new owner, which starts counting
again) counts its new value as processed since the last sample, so a move shows as a dip, never
as a negative rate. Plain Python: no Ray, no Kafka; one writer (the sampler), any readers.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from goka_ray.control.status import GroupStatus

__all__ = ["GroupHistory", "Sample"]


@dataclass(frozen=True)
class Sample:
    """One group at one moment: per partition, messages processed so far and the lag."""

    time: float  # seconds since the epoch
    state: str
    processed: dict[int, int]
    lag: dict[int, int]

    @classmethod
    def of(cls, status: GroupStatus, time: float) -> Sample:
        return cls(
            time=time,
            state=status.state,
            processed={p.partition: p.processed for p in status.partitions},
            lag={p.partition: sum(p.lag.values()) for p in status.partitions},
        )


class GroupHistory:
    """The samples of the last ``seconds`` for every group (thread-safe)."""

    def __init__(self, seconds: float = 600.0) -> None:
        self.seconds = seconds
        self._samples: dict[str, deque[Sample]] = {}
        self._lock = threading.Lock()

    def add(self, status: GroupStatus, time: float) -> None:
        """Record ``status`` taken at ``time``; samples older than ``seconds`` are dropped."""
        with self._lock:
            samples = self._samples.setdefault(status.group, deque())
            samples.append(Sample.of(status, time))
            while samples and samples[0].time < time - self.seconds:
                samples.popleft()

    def keep_only(self, groups: set[str]) -> None:
        """Forget groups that no longer run."""
        with self._lock:
            for group in set(self._samples) - groups:
                del self._samples[group]

    def samples(self, group: str) -> list[Sample]:
        with self._lock:
            return list(self._samples.get(group, ()))

    def series(self, group: str, window: float = 0.0) -> dict[str, Any]:
        """Chart data: ``time`` (one per sample but the first), ``rate`` (messages/s) and
        ``lag`` (messages) per partition and for the whole group (``total``).

        ``{"time": [t1, ...], "rate": {"total": [...], "0": [...]}, "lag": {...}}``; partition
        keys are strings (JSON); a partition absent from a sample has no value there (None).
        A rate is averaged over the last ``window`` seconds (at least one interval), which
        smooths out the batches in which partitions process.
        """
        samples = self.samples(group)
        partitions = sorted({p for s in samples for p in s.processed})
        names = ["total", *(str(p) for p in partitions)]
        times: list[float] = []
        rate: dict[str, list[float | None]] = {name: [] for name in names}
        lag: dict[str, list[int | None]] = {name: [] for name in names}
        # messages processed between consecutive samples, per partition (None: not reported)
        steps: list[dict[int, int | None]] = []
        for before, after in itertools.pairwise(samples):
            step: dict[int, int | None] = {}
            for p in partitions:
                now, then = after.processed.get(p), before.processed.get(p, 0)
                step[p] = None if now is None else (now - then if now >= then else now)
            steps.append(step)
        for i, after in enumerate(samples[1:], start=1):
            first = i - 1  # the earliest sample of the window ending at sample i
            while first > 0 and after.time - samples[first - 1].time <= window:
                first -= 1
            seconds = after.time - samples[first].time
            if seconds <= 0:
                continue
            times.append(after.time)
            total = 0.0
            for p in partitions:
                if steps[i - 1][p] is None:
                    rate[str(p)].append(None)
                else:
                    done = sum(steps[k][p] or 0 for k in range(first, i))
                    rate[str(p)].append(done / seconds)
                    total += done / seconds
                lag[str(p)].append(after.lag.get(p))
            rate["total"].append(total)
            lag["total"].append(sum(after.lag.values()))
        return {"time": times, "rate": rate, "lag": lag}
