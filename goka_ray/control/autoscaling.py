"""Autoscaler: the actor count a group should run on, from its lag and throughput (pure).

The coordinator's policy feeds it one :class:`LagSample` per status round in which every
partition runs (none is moving), and scales the group to the count it returns through the
live hand-over. Time comes from the caller (an injected clock in tests), so the rule is
unit-tested without Ray, Kafka or sleeping. Kafka stream processors leave this to an outside
scaler (KEDA scales Kafka consumers by lag per replica); Ray Serve's autoscaler scales
replicas by requests in flight with upscale and downscale delays, which this follows.

The rule (``AutoscalingConfig``, lag ``L`` = messages behind the inputs' ends per partition,
target ``T``):
- up: ``L > T`` in every sample for ``upscale_delay_s``, and the group is not catching up
  fast enough to get below ``T`` within ``max(upscale_delay_s, RATE_WINDOW)`` at the rates
  measured -> ``ceil(actors * L / T)`` actors (at least one more), at most ``max_actors``
  (and the partition count);
- down: ``L <= T / 2`` in every sample for ``downscale_delay_s`` -> the fewest actors that
  carry the input rate at 75 % of the throughput per actor measured while the group lagged
  (``min_actors`` if it never lagged), when that is fewer than now;
- otherwise (``T / 2 < L <= T``) the count holds.

Invariants (why it never flaps): a change needs its condition to hold without a break for a
whole delay, measured afresh after every change (samples are taken only while no partition
moves, and each change starts the count again); the two conditions exclude each other (a
band between ``T / 2`` and ``T``); a group that drains its backlog fast enough is not scaled
up further; a scale-down keeps a quarter of headroom over the measured input rate, so the
lag it leaves does not grow back above ``T``. Every change comes with the reason it was
made.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from goka_ray.core.config import AutoscalingConfig

__all__ = ["DOWNSCALE_HEADROOM", "RATE_WINDOW", "Autoscaler", "LagSample", "ScaleTo"]

#: seconds of samples the input and processing rates are measured over
RATE_WINDOW = 10.0
#: a scale-down plans for this share of the throughput per actor measured while lagging
DOWNSCALE_HEADROOM = 0.75


@dataclass(frozen=True)
class LagSample:
    """One status round of a group whose partitions all run."""

    #: the caller's clock (seconds)
    at: float
    #: actors (workers) the partitions run on
    actors: int
    #: messages behind the inputs' ends, summed over partitions
    lag: int
    #: next offsets to process, summed over partitions and inputs (what was consumed)
    position: int


@dataclass(frozen=True)
class ScaleTo:
    """A decision: run the group on ``actors`` actors, because of ``reason``."""

    actors: int
    reason: str


class Autoscaler:
    """The scaling rule of one group (see the module docstring)."""

    def __init__(self, config: AutoscalingConfig, partitions: int) -> None:
        self.config = config
        self.partitions = partitions
        self._samples: deque[LagSample] = deque()
        self._above_since: float | None = None
        self._below_since: float | None = None
        #: messages per second one actor processed while the group lagged (None: never seen)
        self.capacity: float | None = None
        #: what the last sample showed, for the status
        self.last: LagSample | None = None

    @property
    def low(self) -> int:
        return min(self.config.min_actors, self.partitions)

    @property
    def high(self) -> int:
        top = self.config.max_actors or self.partitions
        return max(self.low, min(top, self.partitions))

    def clamp(self, actors: int) -> int:
        return max(self.low, min(self.high, actors))

    def restart(self) -> None:
        """Forget the samples: the count changed (or moves began), rates start afresh."""
        self._samples.clear()
        self._above_since = self._below_since = None

    def _rates(self) -> tuple[float, float] | None:
        """(input rate, processing rate) in messages/s over the window, or None."""
        first, last = self._samples[0], self._samples[-1]
        span = last.at - first.at
        if span < 1.0:
            return None
        processed = max(0, last.position - first.position) / span
        arrived = max(0, (last.position + last.lag) - (first.position + first.lag)) / span
        return arrived, processed

    def observe(self, sample: LagSample) -> ScaleTo | None:
        """Take one sample; return a decision when the count should change."""
        self.last = sample
        self._samples.append(sample)
        while self._samples and self._samples[0].at < sample.at - RATE_WINDOW:
            self._samples.popleft()
        target = self.config.target_lag_per_partition
        per_partition = sample.lag / max(1, self.partitions)
        rates = self._rates()
        if per_partition > target:
            self._below_since = None
            self._above_since = self._above_since if self._above_since is not None else sample.at
            if rates is not None and sample.actors:
                self.capacity = rates[1] / sample.actors
            held = sample.at - self._above_since
            if held < self.config.upscale_delay_s or sample.actors >= self.high:
                return None
            trend = ""
            if rates is not None:
                arrived, processed = rates
                excess = sample.lag - target * self.partitions
                horizon = max(self.config.upscale_delay_s, RATE_WINDOW)
                if processed > arrived and excess / (processed - arrived) <= horizon:
                    return None  # catching up fast enough: below the target soon
                trend = f"; {arrived:,.0f} msg/s arriving, {processed:,.0f} msg/s processed"
            proportional = math.ceil(sample.actors * per_partition / target)
            wanted = self.clamp(max(sample.actors + 1, proportional))
            return ScaleTo(
                wanted,
                f"lag {per_partition:,.0f} per partition above the target {target:,} "
                f"for {held:.1f} s{trend}",
            )
        if per_partition > target / 2:
            self._above_since = self._below_since = None  # in the band: hold
            return None
        self._above_since = None
        self._below_since = self._below_since if self._below_since is not None else sample.at
        held = sample.at - self._below_since
        if held < self.config.downscale_delay_s or sample.actors <= self.low or rates is None:
            return None
        arrived = rates[0]
        if self.capacity:
            needed = math.ceil(arrived / (self.capacity * DOWNSCALE_HEADROOM))
            carry = (
                f"{arrived:,.0f} msg/s arriving; about {self.capacity:,.0f} msg/s per actor "
                "measured while lagging"
            )
        else:
            needed = self.low
            carry = f"{arrived:,.0f} msg/s arriving; the group never lagged"
        wanted = self.clamp(needed)
        if wanted >= sample.actors:
            return None
        return ScaleTo(
            wanted,
            f"lag {per_partition:,.0f} per partition below half the target {target:,} for "
            f"{held:.1f} s ({carry})",
        )

    def summary(self, actors: int) -> str:
        """One line for the status: bounds, target and what the last sample showed."""
        target = self.config.target_lag_per_partition
        line = f"{actors} actors in [{self.low}, {self.high}], target lag {target:,}/partition"
        if self.last is not None:
            line += f", lag now {self.last.lag / max(1, self.partitions):,.0f}/partition"
        return line
