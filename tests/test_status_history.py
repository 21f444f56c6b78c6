"""The monitor's history: throughput and lag per partition from successive status samples."""

from __future__ import annotations

import pytest

from goka_ray.control.history import GroupHistory
from goka_ray.control.status import GroupStatus, PartitionStatus
from goka_ray.core.stats import PartitionStats


def status(processed: dict[int, int], lag: dict[int, int] | None = None) -> GroupStatus:
    lag = lag or {}
    return GroupStatus(
        "clicks",
        "running",
        [
            PartitionStatus(
                p, "running", stats=PartitionStats(processed=n, lag={"clicks": lag.get(p, 0)})
            )
            for p, n in processed.items()
        ],
    )


def test_rates_are_messages_per_second_between_samples() -> None:
    history = GroupHistory()
    history.add(status({0: 0, 1: 0}, {0: 50}), time=100.0)
    history.add(status({0: 20, 1: 10}, {0: 30}), time=102.0)
    history.add(status({0: 20, 1: 40}), time=104.0)
    series = history.series("clicks")
    assert series["time"] == [102.0, 104.0]
    assert series["rate"] == {"total": [15.0, 15.0], "0": [10.0, 0.0], "1": [5.0, 15.0]}
    assert series["lag"] == {"total": [30, 0], "0": [30, 0], "1": [0, 0]}


def test_a_counter_that_restarts_after_a_move_is_never_a_negative_rate() -> None:
    history = GroupHistory()
    history.add(status({0: 1000}), time=0.0)
    history.add(status({0: 30}), time=1.0)  # a new owner counts from zero
    history.add(status({0: 50}), time=2.0)
    assert history.series("clicks")["rate"]["0"] == [30.0, 20.0]


def test_a_window_averages_the_rate_over_the_last_seconds() -> None:
    history = GroupHistory()
    for i, n in enumerate([0, 100, 100, 300]):
        history.add(status({0: n}), time=float(i))
    assert history.series("clicks", window=2.0)["rate"]["0"] == [100.0, 50.0, 100.0]


def test_old_samples_and_gone_groups_are_forgotten() -> None:
    history = GroupHistory(seconds=10.0)
    for t in range(30):
        history.add(status({0: t}), time=float(t))
    samples = history.samples("clicks")
    assert [s.time for s in samples] == [float(t) for t in range(19, 30)]
    history.keep_only({"other"})
    assert history.samples("clicks") == []
    assert history.series("clicks") == {"time": [], "rate": {"total": []}, "lag": {"total": []}}


def test_a_partition_that_is_not_reported_has_no_value() -> None:
    history = GroupHistory()
    history.add(status({0: 0, 1: 0}), time=0.0)
    history.add(status({0: 5}), time=1.0)
    series = history.series("clicks")
    assert series["rate"]["1"] == [None] and series["lag"]["1"] == [None]
    assert series["rate"]["total"] == [pytest.approx(5.0)]
