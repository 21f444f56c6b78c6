"""Status records of groups and views, as the coordinator reports them."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field, fields
from typing import Any

from goka_ray.core.stats import PartitionStats, StatsFields
from goka_ray.core.views import ViewStatus  # defined in the core: every kind of view reports it

__all__ = [
    "Assignment",
    "GroupState",
    "GroupStatus",
    "PartitionState",
    "PartitionStatus",
    "ScalingDecision",
    "ViewStatus",
]


class GroupState(enum.StrEnum):
    """Lifecycle of a processor group, as its coordinator reports it."""

    STARTING = "starting"
    RUNNING = "running"
    #: a live change of config is moving partitions between actors
    SCALING = "scaling"
    #: a rolling upgrade moves partitions, one actor at a time, to actors running new code
    UPGRADING = "upgrading"
    #: a callback failed, or partitions were restarted more than ``max_restarts`` times
    FAILED = "failed"
    STOPPED = "stopped"


class PartitionState(enum.StrEnum):
    """What a partition actor reports for one partition it holds (a runner's lifecycle, or
    ``standby`` for a passive copy); ``starting`` until the coordinator heard of it, or
    ``pending`` while Ray has not placed its actor (waiting for resources, not hung)."""

    STARTING = "starting"
    PENDING = "pending"
    IDLE = "idle"
    RECOVERING = "recovering"
    RECOVERED = "recovered"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"
    STANDBY = "standby"


@dataclass(frozen=True)
class PartitionStatus(StatsFields):
    """One partition of a processor group: where it runs, its state, and its runner's
    :class:`~goka_ray.core.stats.PartitionStats` (offsets, lag, keys and the counters, read as
    attributes too: ``status.processed``, ``status.lag``, ...)."""

    partition: int
    #: a :class:`PartitionState` value (a ``str``): idle | recovering | recovered | running |
    #: stopping | stopped | failed | standby | starting | pending
    state: str
    node_id: str | None = None
    actor_name: str | None = None
    pid: int | None = None
    restarts: int = 0
    epoch: int = 0
    error: str | None = None
    #: live standby copies of this partition (``standby_replicas``)
    standbys: int = 0
    #: the nodes of those standbys (never the owner's node while the cluster has another)
    standby_nodes: list[str] = field(default_factory=list)
    #: fingerprint (short) of the graph and code the partition runs (see ``GroupStatus.code``)
    code: str = ""
    #: the counters are, in a group's status, since the group started over every owner the
    #: partition had (processed, skipped, dead_lettered); as an actor reports it, its runner's
    stats: PartitionStats = field(default_factory=PartitionStats)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: the status's fields with the stats' fields beside them."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "stats"}
        out.update(self.stats.as_dict())
        return out


@dataclass(frozen=True)
class ScalingDecision:
    """One change of a group's actor count by its autoscaler, with the reason."""

    #: when it was decided (Unix time, seconds)
    at: float
    actors_from: int
    actors_to: int
    #: what the autoscaler saw, e.g. "lag 5,210 per partition above the target 1,000 for 2 s"
    reason: str

    def __str__(self) -> str:
        return f"{self.actors_from} -> {self.actors_to} actors: {self.reason}"


@dataclass(frozen=True)
class GroupStatus:
    """A processor group: its overall state and every partition."""

    group: str
    #: a :class:`GroupState` value (a ``str``): starting | running | scaling | upgrading |
    #: failed | stopped
    state: str
    partitions: list[PartitionStatus]
    error: str | None = None
    #: partition actors (workers) the group runs on now
    actors: int = 0
    #: placement problems the group cannot fix itself, each saying what to do (e.g. a standby
    #: that shares its owner's node because the cluster has no other node)
    warnings: list[str] = field(default_factory=list)
    #: with ``autoscaling``: its bounds and what it sees now (None without autoscaling)
    autoscaling: str | None = None
    #: the autoscaler's recent decisions, oldest first
    scaling: list[ScalingDecision] = field(default_factory=list)
    #: fingerprint (short) of the graph and code the group runs, or is upgrading to
    code: str = ""
    #: why partition actors wait to be placed by Ray (None: none waits)
    waiting: str | None = None

    @property
    def ready(self) -> bool:
        """All partitions recovered and processing."""
        return bool(self.partitions) and all(p.state == "running" for p in self.partitions)

    @property
    def lag(self) -> int:
        return sum(sum(p.lag.values()) for p in self.partitions)

    @property
    def keys(self) -> int:
        return sum(p.keys for p in self.partitions)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (``goka-ray status --json``, the monitor's API)."""
        return {
            "group": self.group,
            "state": self.state,
            "partitions": [p.as_dict() for p in self.partitions],
            "error": self.error,
            "actors": self.actors,
            "warnings": list(self.warnings),
            "autoscaling": self.autoscaling,
            "scaling": [dataclasses.asdict(d) for d in self.scaling],
            "code": self.code,
            "waiting": self.waiting,
        }


@dataclass(frozen=True)
class Assignment:
    """What a rebalance callback receives when a partition actor takes or gives up a partition.

    ``event`` is ``"assigned"`` (the actor starts processing the partition under ``epoch``) or
    ``"revoked"`` (it stopped processing it: a move, a scale, a stop).
    """

    group: str
    actor_name: str
    partition: int
    event: str
    epoch: int
