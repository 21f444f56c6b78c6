"""The group as the coordinator's policy tracks it: one record every part of the policy reads.

:class:`~goka_ray.control.policy.CoordinatorPolicy` is a facade over collaborators that each
hold one concept (the hand-over of a partition, the roster of actors, standbys, failover,
scaling, the rolling upgrade, adoption after a restart, the status report). They share
this record, :class:`TrackedGroup`, and call each other's steps in one direction only: the
hand-over <- the roster <- standbys <- failover, scaling, the upgrade <- adoption. The
record's methods are queries (and the record of where the nodes are); they change nothing
else.

Invariants (who writes what):
- ``owner`` and ``moves`` change only in :mod:`goka_ray.control.handover` (and when
  :mod:`goka_ray.control.failover` or :mod:`goka_ray.control.adoption` take a partition
  from a dead, failed or unknown owner): at most one owner and one move per partition.
- ``actors`` gains entries only in :mod:`goka_ray.control.roster` (workers) and
  :mod:`goka_ray.control.standbys` (standbys), or at an adoption; an actor leaves it only
  through the roster (killed or retired), which records it in ``departed`` (and a killed
  one in ``zombies`` until Ray confirms it gone).
- ``state`` is written by the commands (start, scale, upgrade, stop, adopt), by failover
  (``FAILED``), by a resize (``SCALING``), and back to ``RUNNING`` by the status round that
  ends a scale or the upgrade's last step.
- ``last`` holds exactly the statuses of the latest status round.
- Every part logs its decisions to one logger, :data:`POLICY_LOG`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from goka_ray.control.actions import ActorResources, Role
from goka_ray.control.assignment import plan_actors
from goka_ray.control.autoscaling import Autoscaler
from goka_ray.control.fencing import EpochTable
from goka_ray.control.placement import NodeLoad
from goka_ray.control.status import GroupState, PartitionStatus, ScalingDecision
from goka_ray.control.totals import PartitionTotals
from goka_ray.core.config import GroupConfig

if TYPE_CHECKING:  # the record holds moves; the hand-over module defines and drives them
    from goka_ray.control.handover import Move

__all__ = ["POLICY_LOG", "TrackedActor", "TrackedGroup"]

#: the one log of the policy's decisions, whichever part makes them (users tune it by this name)
POLICY_LOG = "goka_ray.control.policy"


@dataclass
class TrackedActor:
    """A partition actor the policy tracks."""

    name: str
    role: Role
    #: the partitions it owns, moves to, or (a standby) follows
    partitions: set[int] = field(default_factory=set)
    #: the node it runs on (as reported), or the one chosen for it until it reports
    node_id: str | None = None
    #: status rounds in a row it left unanswered
    misses: int = 0
    #: the node placement chose for it (None: left to Ray)
    wanted_node: str | None = None
    #: it reported the node it runs on
    placed: bool = False
    #: Ray has not placed it yet (it waits for resources): never judged hung for it
    pending: bool = False
    #: the fingerprint of the code it runs ("" where unknown)
    code: str = ""


@dataclass
class TrackedGroup:
    """Everything the policy knows about one processor group (see the module docstring).

    ``clock``: monotonic seconds (moves, leases, delays); ``wall``: epoch seconds (the
    times of scaling decisions shown to users); ``new_id``: unique hex strings for names.
    """

    name: str
    config: GroupConfig
    epochs: EpochTable
    clock: Callable[[], float]
    wall: Callable[[], float]
    new_id: Callable[[], str]
    #: the fingerprint of the code the group runs (or is upgrading to)
    code: str
    #: messages counted per partition over all its owners
    totals: PartitionTotals
    state: GroupState = GroupState.STARTING
    partitions: int = 0
    actors: dict[str, TrackedActor] = field(default_factory=dict)
    owner: dict[int, str] = field(default_factory=dict)
    moves: dict[int, Move] = field(default_factory=dict)
    restarts: dict[int, int] = field(default_factory=dict)
    #: killed actors whose end Ray has not confirmed: name -> node (None: unknown)
    zombies: dict[str, str | None] = field(default_factory=dict)
    #: actors the policy retired or killed (not to be swept again while Ray lists them)
    departed: set[str] = field(default_factory=set)
    alive_nodes: frozenset[str] = frozenset()
    #: alive nodes that can host an actor of the group (placement chooses among them)
    hosts: frozenset[str] = frozenset()
    error: BaseException | None = None
    #: recover_ahead: no partition gets Go until every partition has recovered
    hold_go: bool = False
    #: the last statuses seen, by (actor, partition)
    last: dict[tuple[str, int], PartitionStatus] = field(default_factory=dict)
    #: the autoscaler (``autoscaling`` configured) and the actor count it chose
    autoscaler: Autoscaler | None = None
    target_actors: int | None = None
    decisions: deque[ScalingDecision] = field(default_factory=lambda: deque(maxlen=20))

    # -- actors ---------------------------------------------------------------------------

    def workers(self) -> list[TrackedActor]:
        return [a for a in self.actors.values() if a.role is Role.WORKER]

    def standbys(self) -> list[TrackedActor]:
        return [a for a in self.actors.values() if a.role is Role.STANDBY]

    def standbys_of(self, partition: int) -> list[TrackedActor]:
        """The standbys of ``partition``, oldest first."""
        return [a for a in self.standbys() if partition in a.partitions]

    def pending(self) -> list[TrackedActor]:
        """The actors Ray has not placed yet (as of the last status round)."""
        return [a for a in self.actors.values() if a.pending]

    def holder(self, partition: int) -> str | None:
        """The actor that owns ``partition`` or is the target of its move."""
        move = self.moves.get(partition)
        return move.target if move is not None else self.owner.get(partition)

    def holding(self, name: str) -> set[int]:
        """The partitions ``name`` owns or is the target of, once its moves are done."""
        return {p for p in range(self.partitions) if self.holder(p) == name}

    def suspects(self, replacing: str | None) -> set[str]:
        """The killed actors that may still write a partition: the replaced owner, or after
        a restart every actor killed because it did not answer."""
        return set(self.zombies) if replacing is None else {replacing}

    # -- the plan and the nodes -----------------------------------------------------------

    def plan(self) -> list[list[int]]:
        """The sets of partitions the configured (or autoscaled) actor count plans."""
        cfg = self.config
        actors = self.target_actors if self.autoscaler is not None else cfg.actors
        return plan_actors(
            self.partitions, partitions_per_actor=cfg.partitions_per_actor, actors=actors
        )

    def resources(self, node: str | None) -> ActorResources:
        """What a new actor asks of Ray, preferring ``node``."""
        cfg = self.config
        return ActorResources(cfg.num_cpus, cfg.memory, node, spread=cfg.placement == "spread")

    def set_nodes(self, alive: frozenset[str], hosts: frozenset[str] | None) -> None:
        """Record the alive nodes and those that can host an actor (None: every alive one)."""
        self.alive_nodes = alive
        self.hosts = alive if hosts is None else hosts & alive

    def host_nodes(self) -> frozenset[str]:
        return self.hosts or self.alive_nodes

    def load(self) -> NodeLoad:
        return NodeLoad.count((a.node_id, a.role is Role.WORKER) for a in self.actors.values())

    def on_lost_node(self, actor: TrackedActor) -> bool:
        """Whether ``actor`` was placed on a node that is no longer alive."""
        return (
            actor.placed
            and actor.node_id is not None
            and bool(self.alive_nodes)
            and actor.node_id not in self.alive_nodes
        )
