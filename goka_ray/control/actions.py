"""What the coordinator's policy observes and the actions it returns (no Ray, no Kafka).

The vocabulary between :class:`~goka_ray.control.policy.CoordinatorPolicy` and the actor
shell: a status round (:class:`Observation` of one :class:`ActorReport` per actor) goes in;
actions (:data:`Action`) come out, and the shell carries them out in order through the one
class that calls Ray (:class:`goka_ray.actors.group_actors.GroupActors`). Outcomes that
matter to the policy (a release confirmed, a go accepted, a retire confirmed) are reported
back to it. All records are frozen: the policy never shares mutable state with the shell.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from goka_ray.control.status import PartitionStatus

__all__ = [
    "Action",
    "ActorReport",
    "ActorResources",
    "Assign",
    "Follow",
    "Go",
    "Kill",
    "Observation",
    "Reach",
    "Release",
    "Retire",
    "Role",
    "Spawn",
]


class Role(enum.Enum):
    """What a partition actor of the group is for."""

    #: owns partitions (or is the target of their moves) and processes them
    WORKER = "worker"
    #: keeps a passive copy of one partition current from its changelog
    STANDBY = "standby"


class Reach(enum.Enum):
    """How an actor answered one status round."""

    #: it answered before the deadline
    ANSWERED = "answered"
    #: Ray has not started it yet (waiting for resources or its process): not hung
    PENDING = "pending"
    #: alive for Ray, but no answer before the deadline; hung after HUNG_AFTER_MISSES rounds
    SILENT = "silent"
    #: Ray reports it dead
    DEAD = "dead"


# -- observations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ActorReport:
    """What one status round found out about one actor."""

    reach: Reach
    statuses: tuple[PartitionStatus, ...] = ()
    #: errors of the partitions it reports as failed (None: it could not say)
    failures: Mapping[int, BaseException | None] = field(default_factory=dict)
    #: the node Ray placed it on, where known (from its statuses, or from Ray if it is silent)
    node_id: str | None = None


@dataclass(frozen=True)
class Observation:
    """One status round (an actor missing from ``actors`` is not judged this round)."""

    actors: Mapping[str, ActorReport]
    #: nodes alive for Ray whose raylet answers (an actor placed elsewhere is on a lost node)
    alive_nodes: frozenset[str] = frozenset()
    #: killed actors whose process Ray confirms ended (or never started)
    gone: frozenset[str] = frozenset()
    #: every live named actor of the group Ray lists (None: not looked up this round)
    named: frozenset[str] | None = None
    #: alive nodes with the resources for one partition actor (None: every alive node)
    hosts: frozenset[str] | None = None


# -- actions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActorResources:
    """Where and with what a new actor is placed."""

    num_cpus: float
    memory: int | None = None
    #: preferred node (soft affinity), e.g. the node of a replaced actor whose copy is there
    node: str | None = None
    #: spread the group's actors over the nodes (when no node is preferred)
    spread: bool = True


@dataclass(frozen=True)
class Spawn:
    """Create a partition actor named ``name``."""

    name: str
    role: Role
    resources: ActorResources


@dataclass(frozen=True)
class Assign:
    """Tell ``actor`` to recover ``partition`` under ``epoch`` (then wait for Go)."""

    actor: str
    partition: int
    epoch: int


@dataclass(frozen=True)
class Follow:
    """Tell standby ``actor`` to keep a copy of ``partition`` current."""

    actor: str
    partition: int


@dataclass(frozen=True)
class Release:
    """Ask ``actor`` to stop ``partition`` gracefully; report with
    :meth:`~CoordinatorPolicy.released` whether it confirmed it stopped."""

    actor: str
    partition: int


@dataclass(frozen=True)
class Go:
    """Let ``actor`` process ``partition`` under ``epoch``; report with
    :meth:`~CoordinatorPolicy.went` whether it accepted."""

    actor: str
    partition: int
    epoch: int


@dataclass(frozen=True)
class Retire:
    """Stop these actors gracefully (finish the batch, commit, close), then remove them."""

    actors: tuple[str, ...]


@dataclass(frozen=True)
class Kill:
    """Remove ``actor`` at once (dead, hung, stale, or a standby no longer needed)."""

    actor: str


Action = Spawn | Assign | Follow | Release | Go | Retire | Kill
