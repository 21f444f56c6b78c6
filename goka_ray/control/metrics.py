"""Per-partition metrics for the Ray dashboard (Prometheus), through ``ray.util.metrics``.

Partition actors call ``PartitionMetrics.observe(status)`` every few seconds; counters grow by
the difference to the previous snapshot, so a replaced runner (whose counters restart at zero)
never makes a counter go backwards. The metric objects come from a factory so the bookkeeping
is testable without Ray.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["METRICS", "MetricSink", "PartitionMetrics"]

#: name -> (kind, description); every metric has the tags group, partition (and topic for lag)
METRICS: dict[str, tuple[str, str]] = {
    "goka_ray_messages_in": ("counter", "input messages processed"),
    "goka_ray_messages_out": ("counter", "messages emitted (outputs, loopback, dead letters)"),
    "goka_ray_messages_skipped": ("counter", "input messages skipped by a policy"),
    "goka_ray_messages_dead_lettered": ("counter", "input messages sent to the dead-letter topic"),
    "goka_ray_lag": ("gauge", "messages behind the end of the input topic"),
    "goka_ray_keys": ("gauge", "keys in the partition's table"),
    "goka_ray_recovered_records": ("gauge", "changelog records read by the last recovery"),
    "goka_ray_running": ("gauge", "1 while the partition processes input, else 0"),
}


class MetricSink(Protocol):
    """The part of a ray.util.metrics Counter/Gauge that is used."""

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None: ...

    def set(self, value: float, tags: dict[str, str] | None = None) -> None: ...


class _Snapshot(Protocol):
    """The fields of a RunnerStatus that are published."""

    @property
    def state(self) -> Any: ...
    @property
    def lag(self) -> dict[str, int]: ...
    @property
    def keys(self) -> int: ...
    @property
    def recovered(self) -> int: ...


_COUNTED = {
    "goka_ray_messages_in": "processed",
    "goka_ray_messages_out": "emitted",
    "goka_ray_messages_skipped": "skipped",
    "goka_ray_messages_dead_lettered": "dead_lettered",
}


class PartitionMetrics:
    """Turns runner snapshots of one partition into counter increments and gauge values."""

    def __init__(self, group: str, partition: int, sink: Callable[[str], MetricSink]) -> None:
        self.tags = {"group": group, "partition": str(partition)}
        self._metrics = {name: sink(name) for name in METRICS}
        self._last: dict[str, int] = {}

    def observe(self, status: _Snapshot) -> None:
        for name, attr in _COUNTED.items():
            value = int(getattr(status, attr))
            previous = self._last.get(attr, 0)
            # a new runner starts from zero: count what it did since, never a negative step
            delta = value - previous if value >= previous else value
            if delta:
                self._metrics[name].inc(delta, tags=self.tags)
            self._last[attr] = value
        for topic, lag in status.lag.items():
            self._metrics["goka_ray_lag"].set(lag, tags={**self.tags, "topic": topic})
        self._metrics["goka_ray_keys"].set(status.keys, tags=self.tags)
        self._metrics["goka_ray_recovered_records"].set(status.recovered, tags=self.tags)
        running = 1.0 if str(getattr(status.state, "value", status.state)) == "running" else 0.0
        self._metrics["goka_ray_running"].set(running, tags=self.tags)
