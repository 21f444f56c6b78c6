"""Partition metrics bookkeeping (the Ray export itself is checked in test_cli_cluster)."""

from __future__ import annotations

from dataclasses import dataclass, field

from goka_ray.control.metrics import METRICS, PartitionMetrics


class Recorder:
    def __init__(self) -> None:
        self.incs: list[tuple[float, dict[str, str]]] = []
        self.sets: list[tuple[float, dict[str, str]]] = []

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        assert value > 0, "ray counters reject non-positive increments"
        self.incs.append((value, dict(tags or {})))

    def set(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.sets.append((value, dict(tags or {})))

    @property
    def total(self) -> float:
        return sum(v for v, _ in self.incs)


@dataclass
class Snap:
    state: str = "running"
    lag: dict[str, int] = field(default_factory=dict)
    keys: int = 0
    processed: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    emitted: int = 0
    recovered: int = 0


def make() -> tuple[PartitionMetrics, dict[str, Recorder]]:
    sinks: dict[str, Recorder] = {}

    def sink(name: str) -> Recorder:
        sinks[name] = Recorder()
        return sinks[name]

    return PartitionMetrics("clicks", 3, sink), sinks


def test_every_metric_is_created_with_group_and_partition_tags() -> None:
    metrics, sinks = make()
    metrics.observe(Snap(lag={"t": 5}, keys=7, processed=10, emitted=2, recovered=100))
    assert set(sinks) == set(METRICS)
    assert sinks["goka_ray_messages_in"].incs == [(10, {"group": "clicks", "partition": "3"})]
    assert sinks["goka_ray_lag"].sets == [(5, {"group": "clicks", "partition": "3", "topic": "t"})]
    assert sinks["goka_ray_keys"].sets[-1][0] == 7
    assert sinks["goka_ray_recovered_records"].sets[-1][0] == 100
    assert sinks["goka_ray_running"].sets[-1][0] == 1.0


def test_counters_grow_by_the_difference_and_survive_a_new_runner() -> None:
    metrics, sinks = make()
    metrics.observe(Snap(processed=10))
    metrics.observe(Snap(processed=25))
    metrics.observe(Snap(processed=25))  # no change: no increment
    metrics.observe(Snap(processed=4, state="recovering"))  # replaced runner restarts at 0
    metrics.observe(Snap(processed=9))
    assert [v for v, _ in sinks["goka_ray_messages_in"].incs] == [10, 15, 4, 5]
    assert sinks["goka_ray_messages_in"].total == 34
    assert [v for v, _ in sinks["goka_ray_running"].sets] == [1.0, 1.0, 1.0, 0.0, 1.0]


def test_skips_and_dead_letters_are_counted_separately() -> None:
    metrics, sinks = make()
    metrics.observe(Snap(processed=5, skipped=2, dead_lettered=1, emitted=3))
    assert sinks["goka_ray_messages_skipped"].total == 2
    assert sinks["goka_ray_messages_dead_lettered"].total == 1
    assert sinks["goka_ray_messages_out"].total == 3
