"""The autoscaling rule (goka_ray.control.autoscaling) with an injected clock: no Ray, no Kafka."""

from __future__ import annotations

import itertools

import pytest

from goka_ray import ConfigError
from goka_ray.control.autoscaling import Autoscaler, LagSample
from goka_ray.core.config import AutoscalingConfig, Config


def scaler(partitions: int = 4, **config: object) -> Autoscaler:
    settings = {"min_actors": 1, "max_actors": 4, "target_lag_per_partition": 100}
    settings |= {"upscale_delay_s": 2.0, "downscale_delay_s": 10.0, **config}
    return Autoscaler(AutoscalingConfig(**settings), partitions)  # type: ignore[arg-type]


def test_a_backlog_held_for_the_upscale_delay_scales_up_in_proportion():
    auto = scaler()
    lag = 4 * 1000  # 1,000 per partition, ten times the target
    assert auto.observe(LagSample(0.0, 1, lag, 0)) is None
    assert auto.observe(LagSample(1.0, 1, lag, 500)) is None, "not held for 2 s yet"
    decision = auto.observe(LagSample(2.0, 1, lag, 1000))
    assert decision is not None and decision.actors == 4, "ceil(1 * 1000 / 100), at most max"
    assert "lag 1,000 per partition above the target 100 for 2.0 s" in decision.reason


def test_a_break_in_the_backlog_starts_the_upscale_delay_again():
    auto = scaler()
    assert auto.observe(LagSample(0.0, 1, 4000, 0)) is None
    assert auto.observe(LagSample(1.5, 1, 40, 10)) is None  # drained for a moment
    assert auto.observe(LagSample(2.5, 1, 4000, 20)) is None
    assert auto.observe(LagSample(4.0, 1, 4000, 30)) is None
    assert auto.observe(LagSample(4.5, 1, 4000, 40)) is not None


def test_lag_between_half_the_target_and_the_target_holds_the_count():
    auto = scaler()
    for t in range(0, 60):
        assert auto.observe(LagSample(float(t), 2, 4 * 80, 100 * t)) is None


def test_a_quiet_group_scales_down_to_min_after_the_downscale_delay():
    auto = scaler()
    for t in range(10):
        assert auto.observe(LagSample(float(t), 4, 0, 0)) is None
    decision = auto.observe(LagSample(10.0, 4, 0, 0))
    assert decision is not None and decision.actors == 1
    assert "below half the target 100 for 10.0 s" in decision.reason


def test_a_scale_down_keeps_enough_actors_for_the_input_rate_measured_while_lagging():
    auto = scaler(partitions=8, max_actors=8)
    # 2 actors lag behind while processing 2,000 msg/s: about 1,000 msg/s per actor
    for t in range(4):
        auto.observe(LagSample(float(t), 2, 8 * 1000, 2000 * t))
    assert auto.capacity == pytest.approx(1000)
    auto.restart()  # the count changed to 8
    # caught up; 2,000 msg/s keep arriving and are processed
    position = 100_000
    decision = None
    for t in range(20, 40):
        decision = auto.observe(LagSample(float(t), 8, 0, position)) or decision
        position += 2000
    assert decision is not None
    assert decision.actors == 3, "ceil(2,000 / (1,000 * 0.75))"
    assert "2,000 msg/s arriving" in decision.reason


def test_bounds_cap_the_decisions():
    auto = scaler(min_actors=2, max_actors=3)
    for t in range(3):
        decision = auto.observe(LagSample(float(t), 3, 10**6, t))
    assert decision is None, "at max_actors already"
    assert scaler(partitions=2, max_actors=None).high == 2, "never more actors than partitions"


def test_a_steady_input_rate_never_makes_the_count_flap():
    """Simulated: 2,500 msg/s arrive, each actor processes at most 1,000 msg/s."""
    auto = scaler(partitions=8, max_actors=8, target_lag_per_partition=1000, downscale_delay_s=30)
    rate, capacity = 2500.0, 1000.0
    actors, lag, position = 1, 0.0, 0.0
    counts = [actors]
    for step in range(0, 1200):  # ten minutes in half-second rounds
        now = step * 0.5
        processed = min(lag + rate * 0.5, capacity * actors * 0.5)
        lag += rate * 0.5 - processed
        position += processed
        decision = auto.observe(LagSample(now, actors, int(lag), int(position)))
        if decision is not None:
            actors = decision.actors
            auto.restart()  # the live hand-over done: samples start afresh
            counts.append(actors)
    assert counts[1] > counts[0], "the backlog scaled it up"
    ups = [b > a for a, b in itertools.pairwise(counts)]
    assert ups == sorted(ups, reverse=True), f"no scale-up after a scale-down: {counts}"
    assert len(counts) <= 4, f"no flapping: {counts}"
    assert counts[-1] >= 3, f"ends on enough actors for 2,500 msg/s: {counts}"
    assert lag < 8 * 1000, "caught up"


def test_autoscaling_config_is_validated_with_its_key_path():
    config = Config.from_dict(
        {"groups": {"g": {"autoscaling": {"min_actors": 2, "max_actors": 6}}}}
    ).group("g")
    assert config.autoscaling == AutoscalingConfig(min_actors=2, max_actors=6)
    with pytest.raises(ConfigError, match=r"groups\.g\.autoscaling: max_actors=1 is below"):
        Config.from_dict({"groups": {"g": {"autoscaling": {"min_actors": 2, "max_actors": 1}}}})
    with pytest.raises(ConfigError, match=r"unknown key groups\.g\.autoscaling\.max"):
        Config.from_dict({"groups": {"g": {"autoscaling": {"max": 3}}}})
    with pytest.raises(ConfigError, match="expected a mapping of settings"):
        Config.from_dict({"groups": {"g": {"autoscaling": 3}}})
    changed = Config().with_group("g", autoscaling={"max_actors": 3}).group("g")
    assert changed.autoscaling == AutoscalingConfig(max_actors=3)
