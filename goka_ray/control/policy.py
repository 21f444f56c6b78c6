"""CoordinatorPolicy: the coordinator's decisions as a pure state machine (no Ray, no Kafka).

Facts in, actions out. The coordinator actor (:mod:`goka_ray.actors.coordinator`) observes
the group's actors (each one's partition statuses, or that it did not answer, is not placed
yet, or is dead; which killed actors Ray confirms gone; the live nodes), hands that to the
policy, and carries out the actions the policy returns, in order, through the one class that
calls Ray. Time comes from an injected clock, so every rule is unit-tested without Ray and
without sleeping; epochs come from the :class:`~goka_ray.control.fencing.EpochTable`.

A partition changes owner only through a *move*:
  1. ``RECOVERING``: a new epoch is issued (recorded durably first) and the target actor is
     assigned the partition under it; it recovers its table while the source (the current
     owner, if any) goes on processing;
  2. once the target reported ``recovered``, the source is told to release the partition
     (finish its batch, commit, stop) while its lease still holds;
  3. ``FENCED``: the move's epoch becomes current (recorded first): from now on every older
     lease renewal is refused;
  4. ``Go``: the target processes once no older owner can write any more: the source confirmed
     it stopped, or the partition never had an owner, or every older owner that was killed is
     confirmed gone by Ray and they were all the older owners there were, or a full lease has
     passed since step 3 and no killed older owner on a live node is still unconfirmed.
A move that replaces a dead or hung owner, and every move a restarted coordinator starts, is
``FENCED`` from its start, so the lease runs out while the target recovers.

A scale starts a new worker for every planned set of partitions and moves them all at once; a
rolling *upgrade* to new code moves one outdated worker's partitions at a time to a new worker
(running the code the group records now), each through the same move, and replaces standbys
running other code at once. An actor Ray has not placed yet (``Reach.PENDING``: waiting for
resources) is shown as ``pending`` and never judged hung or restarted. Message counts are kept
per partition over all its owners (:class:`~goka_ray.control.totals.PartitionTotals`).

Invariants:
- Only the policy decides who owns a partition; at most one owner and one move per partition.
- An ``Assign`` carries an epoch that was recorded as issued before the action was returned;
  epochs of a partition only increase (the EpochTable's invariants).
- ``Go`` is returned only for the partition's current epoch, to the actor that holds it, after
  it reported ``recovered`` under that epoch, and only under the conditions of step 4.
- An owner that does not answer is killed before its partitions move, and its process counts
  as a possible writer until Ray confirms it gone or its node is lost and a lease has passed.
- A restarted coordinator adopts as owner only an actor that answers and runs the partition
  under the epoch and name the durable record holds as current; anything else it found is
  released (stale partitions) or killed (silent, dead, unplaced actors); a partition without
  an adopted owner waits out a full lease (it cannot know which leases are outstanding).
- Every actor of the group that the policy does not track is killed; idle workers are retired,
  so the actor count returns to the configured one.
- A new owner waits for an older owner's lease only as long as the table knows it can be
  valid: until ``lease_duration`` after the last renewal it accepted (see
  :mod:`goka_ray.control.fencing`), not a full lease from when the loss was noticed.
- An actor whose node is lost (not alive for Ray, or its raylet unreachable) is replaced at
  once, without waiting for missed status rounds.

Placement (:mod:`goka_ray.control.placement`): workers go where the placement rule says;
standbys only once their owner's node is known, on another node, and they are moved off it
when their owner moves onto their node. Once no partition moves, the workers are brought back
to the planned count and sizes with the fewest live moves (after a failover promoted
standbys, or when the autoscaler, :mod:`goka_ray.control.autoscaling`, changed the count).
- An actor is replaced only when it is dead, or silent for HUNG_AFTER_MISSES rounds while Ray
  reports it placed; waiting for placement never counts as a miss or a restart.
- Every actor spawned after an upgrade started runs the group's new code; an upgrade step
  starts only when no move is under way (an upgrade asked for during a scale starts once its
  moves are done); a scale is refused while an upgrade runs, and the autoscaler waits for it.
"""

from __future__ import annotations

import enum
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from goka_ray.control.actions import (
    Action,
    ActorReport,
    ActorResources,
    Assign,
    Follow,
    Go,
    Kill,
    Observation,
    Reach,
    Release,
    Retire,
    Role,
    Spawn,
)
from goka_ray.control.assignment import plan_actors, rebalance
from goka_ray.control.autoscaling import Autoscaler, LagSample
from goka_ray.control.fencing import EpochTable
from goka_ray.control.names import standby_prefix, worker_prefix
from goka_ray.control.placement import NodeLoad, short_node, standby_node, worker_node
from goka_ray.control.status import (
    GroupState,
    GroupStatus,
    PartitionState,
    PartitionStatus,
    ScalingDecision,
)
from goka_ray.control.totals import PartitionTotals
from goka_ray.core.config import GroupConfig
from goka_ray.errors import GokaRayError, ProcessingError

__all__ = [
    "HUNG_AFTER_MISSES",
    "RESIZE_SETTLE",
    "UNCONFIRMED_GRACE",
    "CoordinatorPolicy",
    "Move",
    "MovePhase",
    "TrackedActor",
]

logger = logging.getLogger(__name__)

#: status rounds in a row an actor may leave unanswered before it counts as hung
HUNG_AFTER_MISSES = 3
#: seconds past a lease that a new owner waits for Ray to confirm that a killed older owner on
#: a live node is gone, before it goes anyway (Ray ends a killed process within seconds)
UNCONFIRMED_GRACE = 30.0
#: seconds a group runs with every partition processing before its actor count is brought
#: back to the planned one (e.g. after a failover promoted standbys): a partition that just
#: failed over is not moved again at once, and a string of failures is not chased
RESIZE_SETTLE = 5.0

#: what a live owner reports for a partition it was told to go with
_PROCESSING = {PartitionState.RUNNING, PartitionState.FAILED, PartitionState.STOPPING}
#: what a target reports before it was told to go
_PREPARING = {PartitionState.IDLE, PartitionState.RECOVERING, PartitionState.RECOVERED}


class MovePhase(enum.Enum):
    """Where a move of a partition to a new owner stands (see the module docstring)."""

    #: the target recovers under an issued epoch; the source, if any, still owns and writes
    RECOVERING = "recovering"
    #: the move's epoch is current; the target goes once recovered and no older owner can write
    FENCED = "fenced"


# -- the state ------------------------------------------------------------------------------


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
class Move:
    """A partition on its way to a new owner (see the module docstring)."""

    partition: int
    target: str
    epoch: int
    #: the live owner that releases the partition before the epoch becomes current
    source: str | None
    phase: MovePhase = MovePhase.RECOVERING
    #: until when a lease of an older epoch may still be valid (None: none can be)
    lease_until: float | None = None
    #: killed older owners whose process Ray has not confirmed gone yet
    blockers: set[str] = field(default_factory=set)
    #: every older owner that may still write is in ``blockers``: once they are confirmed
    #: gone, no lease needs to be waited out (False after a coordinator restart)
    known: bool = True
    #: the unconfirmed-blocker warning was logged
    warned: bool = False
    #: when the move's epoch became current
    fenced_at: float | None = None

    def inherit(self, older: Move) -> None:
        """Carry over what a called-off move waited for (its epoch was current already)."""
        self.source = None
        self.lease_until = older.lease_until
        self.blockers |= older.blockers
        self.known = self.known and older.known

    def usable(
        self, now: float, zombies: Mapping[str, str | None], alive_nodes: frozenset[str]
    ) -> bool:
        """Whether no older owner of the partition can write any more (step 4 of the module
        docstring). ``zombies``: killed actors Ray has not confirmed gone, with their node."""
        self.blockers &= set(zombies)  # confirmed gone: no longer blocking
        lease_over = self.lease_until is None or now >= self.lease_until
        if not self.blockers:
            return self.known or lease_over
        if not lease_over:
            return False
        unconfirmed = [b for b in self.blockers if zombies[b] is None or zombies[b] in alive_nodes]
        if not unconfirmed:
            return True  # the rest were on lost nodes: their leases are over
        since = self.lease_until if self.lease_until is not None else self.fenced_at or now
        if now < since + UNCONFIRMED_GRACE:
            return False
        if not self.warned:
            self.warned = True
            logger.warning(
                "partition %d: Ray has not confirmed that %s ended %.0fs after its lease; the "
                "new owner goes on",
                self.partition,
                unconfirmed,
                now - since,
            )
        return True


class CoordinatorPolicy:
    """The ownership decisions of one processor group (see the module docstring).

    Every method that changes the state returns the actions that carry the change out.
    ``new_id`` makes actor names (unique hex strings; injected in tests).
    """

    def __init__(
        self,
        group: str,
        config: GroupConfig,
        epochs: EpochTable,
        *,
        clock: Callable[[], float] = time.monotonic,
        new_id: Callable[[], str] | None = None,
        wall: Callable[[], float] = time.time,
        code: str = "",
        totals: PartitionTotals | None = None,
    ) -> None:
        self.group = group
        self.config = config
        self.epochs = epochs
        self.lease_duration = epochs.lease_duration
        self.clock = clock
        self._new_id = new_id or (lambda: uuid.uuid4().hex)
        self.state = GroupState.STARTING
        self.partitions = 0
        self.actors: dict[str, TrackedActor] = {}
        self.owner: dict[int, str] = {}
        self.moves: dict[int, Move] = {}
        self.restarts: dict[int, int] = {}
        #: killed actors whose end Ray has not confirmed: name -> node (None: unknown)
        self.zombies: dict[str, str | None] = {}
        #: actors the policy retired or killed (not to be swept again while Ray lists them)
        self.departed: set[str] = set()
        self.alive_nodes: frozenset[str] = frozenset()
        #: alive nodes that can host an actor of the group (placement chooses among them)
        self.hosts: frozenset[str] = frozenset()
        self.wall = wall
        #: the autoscaler (``autoscaling`` configured) and the actor count it chose
        self.autoscaler: Autoscaler | None = None
        self.target_actors: int | None = None
        self.decisions: deque[ScalingDecision] = deque(maxlen=20)
        #: placement warnings already logged
        self._warned: set[str] = set()
        #: since when every partition processes and nothing moves (None: not now)
        self._settled_since: float | None = None
        self.error: BaseException | None = None
        #: recover_ahead: no partition gets Go until every partition has recovered
        self.hold_go = config.recover_ahead
        #: the last statuses seen, by (actor, partition)
        self.last: dict[tuple[str, int], PartitionStatus] = {}
        #: the fingerprint of the code the group runs (or is upgrading to)
        self.code = code
        #: messages counted per partition over all its owners
        self.totals = totals or PartitionTotals()

    # -- queries ------------------------------------------------------------------------------

    @property
    def failed(self) -> bool:
        return self.state is GroupState.FAILED

    def workers(self) -> list[TrackedActor]:
        return [a for a in self.actors.values() if a.role is Role.WORKER]

    def standbys_of(self, partition: int) -> list[TrackedActor]:
        """The standbys of ``partition``, oldest first."""
        return [
            a for a in self.actors.values() if a.role is Role.STANDBY and partition in a.partitions
        ]

    def holder(self, partition: int) -> str | None:
        """The actor that owns ``partition`` or is the target of its move."""
        move = self.moves.get(partition)
        return move.target if move is not None else self.owner.get(partition)

    def pending(self) -> list[TrackedActor]:
        """The actors Ray has not placed yet (as of the last status round)."""
        return [a for a in self.actors.values() if a.pending]

    def status(self, waiting: str | None = None) -> GroupStatus:
        """The group as last observed: per partition, the status of its owner (or target),
        ``pending`` while that actor is not placed, with the counts of all its owners.
        ``waiting``: why actors are pending (the shell knows the cluster's resources)."""
        parts = []
        for p in range(self.partitions):
            holder = self.holder(p)
            st = self.last.get((holder, p)) if holder is not None else None
            if st is None:
                tracked = self.actors.get(holder or "")
                state = PartitionState.PENDING if tracked and tracked.pending else None
                st = PartitionStatus(
                    partition=p,
                    state=state or PartitionState.STARTING,
                    actor_name=holder,
                    code=tracked.code if tracked else "",
                )
            standbys = self.standbys_of(p)
            total = self.totals.total(p)
            parts.append(
                replace(
                    st,
                    restarts=self.restarts.get(p, 0),
                    standbys=len(standbys),
                    standby_nodes=[s.node_id for s in standbys if s.placed and s.node_id],
                    stats=st.stats.copy(
                        processed=total.processed,
                        skipped=total.skipped,
                        dead_lettered=total.dead_lettered,
                    ),
                )
            )
        error = None if self.error is None else f"{type(self.error).__name__}: {self.error}"
        workers = len(self.workers())
        return GroupStatus(
            self.group,
            self.state,
            parts,
            error,
            actors=workers,
            warnings=self.placement_warnings(),
            autoscaling=None if self.autoscaler is None else self.autoscaler.summary(workers),
            scaling=list(self.decisions),
            code=self.code,
            waiting=waiting if self.pending() else None,
        )

    def placement_warnings(self) -> list[str]:
        """What placement could not do on this cluster, each saying what to do about it."""
        hosts = len(self._hosts())
        warnings = []
        for p in range(self.partitions):
            holder = self.actors.get(self.holder(p) or "")
            if holder is None or not holder.placed:
                continue
            for standby in self.standbys_of(p):
                if standby.placed and standby.node_id == holder.node_id:
                    warnings.append(
                        f"partition {p}: its standby shares node {short_node(holder.node_id)} "
                        f"with its owner ({hosts} node(s) can host the group's actors, or the "
                        "others had no room); add a node so that it survives the loss of its "
                        "owner's node"
                    )
        placed = [w.node_id for w in self.workers() if w.placed and w.node_id]
        settled = len(self.workers()) == len(self._plan()) and not self.moves
        if self.config.placement == "spread" and hosts and placed and settled:
            spread_over = len(set(placed))
            if spread_over < min(len(placed), hosts):
                warnings.append(
                    f"placement spread: {len(placed)} actors on {spread_over} of {hosts} nodes "
                    f"(the others had no room for num_cpus={self.config.num_cpus}); free or "
                    "add resources there"
                )
        return warnings

    def visit_targets(self) -> list[tuple[str, int]]:
        """(owner, partition) of every partition, for a visit; GokaRayError unless running."""
        if self.state is not GroupState.RUNNING or self.moves:
            raise GokaRayError(
                f"group {self.group} is {self.state}"
                + (f" with partitions {sorted(self.moves)} moving" if self.moves else "")
                + "; visit when every partition runs"
            )
        return [(name, p) for p, name in sorted(self.owner.items())]

    def renew(self, partition: int, epoch: int, owner: str | None) -> bool:
        """A lease renewal: does ``owner`` still hold the current ``epoch`` of ``partition``?"""
        return self.epochs.renew(partition, epoch, owner)

    # -- commands -----------------------------------------------------------------------------

    def start(
        self, partitions: int, alive_nodes: Iterable[str] = (), hosts: Iterable[str] | None = None
    ) -> list[Action]:
        """Place the partitions on actors as the config plans (their standbys follow once
        the owners' nodes are known). ``hosts``: the alive nodes that can host an actor of
        the group (default: every alive node)."""
        self.partitions = partitions
        self._nodes(frozenset(alive_nodes), None if hosts is None else frozenset(hosts))
        self._configure_autoscaling(self.config)
        actions: list[Action] = []
        for parts in self._plan():
            actions += self._spawn_worker(parts)
        self.state = GroupState.RUNNING
        return actions

    def _nodes(self, alive: frozenset[str], hosts: frozenset[str] | None) -> None:
        self.alive_nodes = alive
        self.hosts = alive if hosts is None else hosts & alive

    def _hosts(self) -> frozenset[str]:
        return self.hosts or self.alive_nodes

    def _configure_autoscaling(self, config: GroupConfig, actors: int | None = None) -> None:
        """Start, change or end autoscaling as ``config`` says; ``actors``: a count asked for."""
        if config.autoscaling is None:
            self.autoscaler, self.target_actors = None, None
            return
        self.autoscaler = Autoscaler(config.autoscaling, self.partitions)
        start = actors or self.target_actors or config.actors or config.autoscaling.min_actors
        self.target_actors = self.autoscaler.clamp(start)

    def scale(self, config: GroupConfig) -> list[Action] | None:
        """Apply a changed config live; None when nothing needs to move.

        GokaRayError if the group is neither running nor scaling.
        """
        if self.state not in (GroupState.RUNNING, GroupState.SCALING):
            hint = "; wait until the upgrade is done" if self.upgrading else ""
            raise GokaRayError(f"group {self.group} is {self.state}; cannot scale it{hint}")
        demand = self.scale_demand(config)
        old, self.config = self.config, config
        if config.autoscaling != old.autoscaling or config.actors != old.actors:
            self._configure_autoscaling(config, config.actors)
        if not demand:
            return None
        plan = self._plan()
        self.state = GroupState.SCALING
        actions: list[Action] = []
        for parts in plan:
            actions += self._spawn_worker(parts)
        return actions

    # -- what the commands would ask of Ray -----------------------------------------------------

    def start_demand(self, partitions: int) -> list[ActorResources]:
        """The actors a start places: every planned worker (as many as the autoscaler starts
        with, where it scales the group) and every standby."""
        cfg = self.config
        workers = plan_actors(
            partitions,
            partitions_per_actor=cfg.partitions_per_actor,
            actors=self._actors_for(cfg, partitions, fresh=True),
        )
        resources = ActorResources(cfg.num_cpus, cfg.memory)
        return [resources] * (len(workers) + partitions * cfg.standby_replicas)

    def scale_demand(self, config: GroupConfig) -> list[ActorResources]:
        """The actors a scale to ``config`` would start ([]: nothing moves): a new worker
        for every planned set of partitions, started before the old ones hand over."""
        old = self.config
        fresh = config.autoscaling != old.autoscaling or config.actors != old.actors
        plan = plan_actors(
            self.partitions,
            partitions_per_actor=config.partitions_per_actor,
            actors=self._actors_for(config, self.partitions, fresh=fresh),
        )
        current = sorted(sorted(a.partitions) for a in self.workers())
        resources = (config.num_cpus, config.memory, config.placement)
        if plan == current and resources == (old.num_cpus, old.memory, old.placement):
            return []
        return [ActorResources(config.num_cpus, config.memory)] * len(plan)

    def _actors_for(self, config: GroupConfig, partitions: int, *, fresh: bool) -> int | None:
        """The actor count ``config`` plans (None: by ``partitions_per_actor``), changing
        nothing: with ``autoscaling``, the count the autoscaler keeps, or (``fresh``: its
        settings or ``actors`` change) starts from, as ``_configure_autoscaling`` sets it."""
        if config.autoscaling is None:
            return config.actors
        if not fresh and self.target_actors is not None:
            return self.target_actors
        start = config.actors or self.target_actors or config.autoscaling.min_actors
        return Autoscaler(config.autoscaling, partitions).clamp(start)

    def upgrade_demand(self) -> list[ActorResources]:
        """What one step of an upgrade starts: one worker (the old one retires after it)."""
        return [ActorResources(self.config.num_cpus, self.config.memory)]

    # -- the rolling upgrade ------------------------------------------------------------------

    @property
    def upgrading(self) -> bool:
        return self.state is GroupState.UPGRADING

    def upgrade(self, code: str) -> list[Action] | None:
        """Move the group to the code whose fingerprint is ``code``, one worker at a time,
        each through a live hand-over (a new worker recovers its partitions, the old one
        releases them, the new one processes); None when every actor runs it already.

        Standbys running other code are replaced at once (a promoted standby processes with
        its own code). An upgrade that comes while a scale (the user's or the autoscaler's)
        moves partitions starts once those moves are done. GokaRayError unless the group is
        running, scaling or upgrading (a newer code then replaces the one being rolled out).
        """
        if self.state not in (GroupState.RUNNING, GroupState.SCALING, GroupState.UPGRADING):
            raise GokaRayError(f"group {self.group} is {self.state}; upgrade it when it is running")
        self.code = code
        if not self._outdated() and not self.upgrading:
            return None
        logger.info("group %s: upgrading to code %s", self.group, code)
        self.state = GroupState.UPGRADING
        actions: list[Action] = []
        for standby in [a for a in self.actors.values() if a.role is Role.STANDBY]:
            if standby.code != code:
                actions += self._kill(standby)  # _ensure_standbys places new ones
        return actions + self._upgrade_step()

    def _outdated(self) -> list[TrackedActor]:
        """Workers holding partitions that run other code than the group's."""
        return [w for w in self.workers() if w.code != self.code and self._holding(w.name)]

    def _upgrade_step(self) -> list[Action]:
        """Once no move is under way, hand the next outdated worker's partitions over to a
        new worker (near it); the upgrade is done when none is left."""
        if not self.upgrading or self.moves:
            return []
        outdated = self._outdated()
        if not outdated:
            logger.info("group %s: every partition runs code %s", self.group, self.code)
            self.state = GroupState.RUNNING
            return []
        old = outdated[0]
        logger.info(
            "group %s: upgrading %s (partitions %s)",
            self.group,
            old.name,
            sorted(self._holding(old.name)),
        )
        return self._spawn_worker(sorted(self._holding(old.name)), near=old.node_id)

    def stop(self) -> list[Action]:
        """Stop the group: every actor commits and closes, then is removed."""
        if self.state is not GroupState.FAILED:
            self.state = GroupState.STOPPED
        return self._remove_all()

    # -- the status round ---------------------------------------------------------------------

    def observe(self, obs: Observation) -> list[Action]:
        """Judge one status round: replace dead and hung actors, restart failed partitions,
        advance moves, keep standbys, retire idle actors, kill actors nobody tracks."""
        if self.state in (GroupState.FAILED, GroupState.STOPPED):
            return []
        self._nodes(obs.alive_nodes, obs.hosts)
        for name in obs.gone:
            self.zombies.pop(name, None)
        actions: list[Action] = []
        statuses: dict[tuple[str, int], PartitionStatus] = {}
        for name, actor in list(self.actors.items()):
            report = obs.actors.get(name)
            if report is None or name not in self.actors:
                continue  # spawned after the round began, or replaced meanwhile
            actions += self._judge(actor, report, statuses)
            if self.failed:
                return actions
        self.last = statuses
        for (name, _p), st in statuses.items():
            self.totals.observe(name, st)
        for (name, p), st in statuses.items():
            if PartitionState(st.state) is PartitionState.FAILED and self._holds(name, p, st):
                report = obs.actors[name]
                actions += self._on_failure(name, p, report.failures.get(p))
                if self.failed:
                    return actions
        actions += self._advance_moves()
        if self.state is GroupState.SCALING and not self.moves:
            self.state = GroupState.RUNNING
        actions += self._upgrade_step()
        actions += self._resize(at_once=self._autoscale())
        actions += self._ensure_standbys()
        if obs.named is not None:
            actions += self._sweep(obs.named)
        self._forget_zombies()
        self._log_warnings()
        return actions

    def _judge(
        self,
        actor: TrackedActor,
        report: ActorReport,
        statuses: dict[tuple[str, int], PartitionStatus],
    ) -> list[Action]:
        """One actor's part of a status round: it answered, is not placed yet, is silent
        (hung after HUNG_AFTER_MISSES rounds in a row) or dead; hung and dead ones go."""
        if report.node_id:
            actor.node_id, actor.placed = report.node_id, True
        actor.pending = report.reach is Reach.PENDING
        match report.reach:
            case Reach.ANSWERED:
                actor.misses = 0
                for st in report.statuses:
                    statuses[(actor.name, st.partition)] = st
                    if st.node_id:
                        actor.node_id, actor.placed = st.node_id, True
                return []
            case Reach.PENDING:
                return []  # not placed yet: waiting for resources is not hanging
            case Reach.SILENT if self._on_lost_node(actor):
                logger.warning(
                    "group %s: %s does not answer and its node %s is lost; replacing it",
                    self.group,
                    actor.name,
                    short_node(actor.node_id),
                )
            case Reach.SILENT:
                actor.misses += 1
                if actor.misses < HUNG_AFTER_MISSES:
                    return []
                logger.warning("group %s: %s is hung; killing it", self.group, actor.name)
            case Reach.DEAD:
                logger.warning("group %s: %s died", self.group, actor.name)
        if actor.role is Role.STANDBY:
            return self._kill(actor)  # a new standby follows (_ensure_standbys)
        return self._replace(actor)

    def _on_lost_node(self, actor: TrackedActor) -> bool:
        """Whether ``actor`` was placed on a node that is no longer alive."""
        return (
            actor.placed
            and actor.node_id is not None
            and bool(self.alive_nodes)
            and actor.node_id not in self.alive_nodes
        )

    def released(
        self, actor: str, partition: int, stopped: bool, final: PartitionStatus | None = None
    ) -> list[Action]:
        """Outcome of a Release: ``stopped`` if the actor confirmed the partition stopped;
        ``final``: the partition's last status there (its final counts), if it reported one."""
        if final is not None:
            self.totals.observe(actor, final)
        tracked = self.actors.get(actor)
        if tracked is not None:
            tracked.partitions.discard(partition)
        move = self.moves.get(partition)
        if move is None or move.source != actor:
            return self._retire_idle()
        move.source = None
        if not stopped:
            logger.warning(
                "group %s: %s did not confirm it released partition %d; waiting out its lease",
                self.group,
                actor,
                partition,
            )
            move.known = False  # its end is not confirmed: its lease must run out
        self._fence(move, lease=not stopped)
        return self._go_if_usable(move) + self._retire_idle()

    def retired(self, actors: Iterable[str], confirmed: bool) -> None:
        """Outcome of a Retire: ``confirmed`` if every actor said it stopped (committed and
        closed). Their partitions then have no owner that could still write."""
        if not confirmed:
            return
        names = set(actors)
        for p in range(self.partitions):
            if self.epochs.owner(p) in names:
                self.epochs.release(p)

    def went(self, actor: str, partition: int, epoch: int, accepted: bool) -> list[Action]:
        """Outcome of a Go: the target accepted (it processes ``partition`` under ``epoch``)."""
        move = self.moves.get(partition)
        if not accepted or move is None or (move.target, move.epoch) != (actor, epoch):
            return []
        self.owner[partition] = actor
        del self.moves[partition]
        logger.info(
            "group %s: partition %d processes on %s under epoch %d",
            self.group,
            partition,
            actor,
            epoch,
        )
        self.totals.settle(partition, (actor, epoch))
        return []

    # -- moves --------------------------------------------------------------------------------

    def _plan(self) -> list[list[int]]:
        cfg = self.config
        actors = self.target_actors if self.autoscaler is not None else cfg.actors
        return plan_actors(
            self.partitions, partitions_per_actor=cfg.partitions_per_actor, actors=actors
        )

    def _resources(self, node: str | None) -> ActorResources:
        cfg = self.config
        return ActorResources(cfg.num_cpus, cfg.memory, node, spread=cfg.placement == "spread")

    def _holds(self, name: str, partition: int, st: PartitionStatus) -> bool:
        """Whether ``st`` is about what ``name`` holds now (not an older assignment)."""
        move = self.moves.get(partition)
        if move is not None and move.target == name:
            return st.epoch == move.epoch
        return self.owner.get(partition) == name

    def _start_move(
        self,
        partition: int,
        target: str,
        *,
        source: str | None,
        epoch: int | None = None,
        blockers: Iterable[str] = (),
        known: bool = True,
    ) -> list[Action]:
        """Assign ``partition`` to ``target`` under a new epoch (issued and recorded first,
        unless ``epoch`` was issued already).

        ``blockers`` (killed older owners) and ``known`` say what the new owner waits for once
        the epoch is current (see :class:`Move`). A move still under way to another target is
        called off: that target never went, so it never wrote; it is told to release, and
        what its move waited for carries over.
        """
        if epoch is None:
            epoch = self.epochs.issue(partition)
        move = Move(partition, target, epoch, source, known=known)
        move.blockers = {b for b in blockers if b in self.zombies}
        actions: list[Action] = []
        old = self.moves.get(partition)
        if old is not None:
            if old.target != target and (previous := self.actors.get(old.target)) is not None:
                previous.partitions.discard(partition)
                actions.append(Release(old.target, partition))
            if old.phase is MovePhase.FENCED:
                move.inherit(old)
        self.moves[partition] = move
        if old is not None and old.phase is MovePhase.FENCED:
            self._fence(move, lease=True)
        return [*actions, Assign(target, partition, epoch)]

    def _fence(self, move: Move, *, lease: bool) -> None:
        """Make the move's epoch current (recorded first): older leases can no longer renew.

        ``lease``: an older owner may hold a lease that is still valid, so the new owner waits
        until the last lease the epoch table granted on an older epoch ends (a full lease from
        now where it cannot know, after a restart), unless the move's ``known`` blockers are
        all confirmed gone. False: the older owner confirmed it stopped. Nothing is waited for
        if no older epoch ever had a live owner. A move fenced already is left as it is.
        """
        if move.phase is MovePhase.FENCED:
            return
        p = move.partition
        previous = self.epochs.owner(p)
        had_owner = previous is not None
        if had_owner and previous not in self.actors and previous not in move.blockers:
            move.known = False  # an owner this coordinator never tracked (a restart)
        self.epochs.make_current(p, move.epoch, move.target)
        move.phase = MovePhase.FENCED
        move.fenced_at = self.clock()
        if not had_owner:
            move.blockers.clear()  # no epoch of it had a live owner: nobody can write
            move.lease_until = None
            move.known = True
            return
        ends = self.epochs.superseded_lease_end(p) if lease else None
        if ends is not None:
            move.lease_until = max(move.lease_until or ends, ends)

    def _spawn_worker(
        self,
        partitions: list[int],
        *,
        near: str | None = None,
        replacing: str | None = None,
        known: bool = True,
    ) -> list[Action]:
        """A new worker that ``partitions`` move to (``near``: preferred node).

        ``replacing``: the partitions' owner died or hung (it was killed); ``known=False``:
        after a coordinator restart, the older owners of partitions without an owner are not
        known. Moves of such orphans are fenced at once, so the lease runs out while the new
        worker recovers; partitions with a live owner are handed over by it.
        """
        epochs = [self.epochs.issue(p) for p in partitions]  # recorded before anything changes
        name = f"{worker_prefix(self.group)}{self._new_id()[:8]}"
        node = worker_node(
            self._hosts(), self._load(), spread=self.config.placement == "spread", near=near
        )
        self.actors[name] = TrackedActor(
            name, Role.WORKER, set(partitions), node_id=node, wanted_node=node, code=self.code
        )
        actions: list[Action] = [Spawn(name, Role.WORKER, self._resources(node))]
        for p, epoch in zip(partitions, epochs, strict=True):
            orphan = replacing is not None or (
                not known and p not in self.owner and p not in self.moves
            )
            actions += self._start_move(
                p,
                name,
                source=None if orphan else self.owner.get(p),
                epoch=epoch,
                blockers=self._suspects(replacing) if orphan else (),
                known=known or not orphan,
            )
            if orphan:
                self._fence(self.moves[p], lease=True)
        return actions

    def _holding(self, name: str) -> set[int]:
        """The partitions ``name`` owns or is the target of, once its moves are done."""
        return {p for p in range(self.partitions) if self.holder(p) == name}

    def _suspects(self, replacing: str | None) -> set[str]:
        """The killed actors that may still write a partition: the replaced owner, or after
        a restart every actor killed because it did not answer."""
        return set(self.zombies) if replacing is None else {replacing}

    def _load(self) -> NodeLoad:
        return NodeLoad.count((a.node_id, a.role is Role.WORKER) for a in self.actors.values())

    def _promote(
        self, partition: int, *, replacing: str | None, known: bool
    ) -> list[Action] | None:
        """Move ``partition`` to its standby that answered last and is not on a lost node
        (the oldest of them); None if it has none."""
        candidates = [s for s in self.standbys_of(partition) if not self._on_lost_node(s)]
        if not candidates:
            return None
        standby = min(candidates, key=lambda s: s.misses)
        actions = self._start_move(
            partition,
            standby.name,
            source=None,
            blockers=self._suspects(replacing),
            known=known,
        )
        standby.role = Role.WORKER
        self._fence(self.moves[partition], lease=True)
        logger.warning(
            "group %s: partition %d fails over to its standby %s",
            self.group,
            partition,
            standby.name,
        )
        return actions

    def _kill(self, actor: TrackedActor) -> list[Action]:
        """Stop tracking ``actor`` and kill it; its process counts until Ray confirms it gone."""
        del self.actors[actor.name]
        self.zombies[actor.name] = actor.node_id
        self.departed.add(actor.name)
        return [Kill(actor.name)]

    def _replace(self, actor: TrackedActor) -> list[Action]:
        """Kill a dead or hung worker and move its partitions to standbys or a new worker.

        Its partitions wait until Ray confirms its process gone, or, if its node is lost, a
        full lease. Moves away from it no longer wait for its release.
        """
        name = actor.name
        actions = self._kill(actor)
        lost = sorted(p for p in actor.partitions if self.holder(p) == name)
        owned = {p for p in lost if self.owner.get(p) == name}
        called_off = {p: self.moves.pop(p) for p in lost if p in self.moves}
        for p in lost:
            self.restarts[p] = self.restarts.get(p, 0) + 1
        for move in self.moves.values():
            if move.source == name:
                move.source = None
                move.blockers.add(name)
        if any(self.restarts[p] > self.config.max_restarts for p in lost):
            return actions + self._fail(
                GokaRayError(
                    f"group {self.group}: partitions {lost} were restarted more than "
                    f"max_restarts={self.config.max_restarts} times; see the actor logs"
                )
            )
        # a move to the dead actor that had not started fencing: its source still owns
        unfenced = [
            p for p, m in called_off.items() if m.phase is MovePhase.RECOVERING and p not in owned
        ]
        for p in unfenced:
            actions += self._spawn_worker([p], near=actor.node_id)
        rest = []
        for p in (p for p in lost if p not in unfenced):
            self.owner.pop(p, None)
            if p in called_off:  # its waits carry over to the next move
                self.moves[p] = called_off[p]
            promoted = self._promote(p, replacing=name, known=True)
            if promoted is None:
                rest.append(p)
            else:
                actions += promoted
        if rest:
            actions += self._spawn_worker(rest, near=actor.node_id, replacing=name)
        return actions

    def _on_failure(self, name: str, partition: int, error: BaseException | None) -> list[Action]:
        if isinstance(error, ProcessingError):
            return self._fail(error)  # a callback failed: it would fail again, stop the group
        self.restarts[partition] = self.restarts.get(partition, 0) + 1
        if self.restarts[partition] > self.config.max_restarts:
            return self._fail(error or GokaRayError(f"partition {partition} failed"))
        logger.warning(
            "group %s partition %d failed (%s); restarting it", self.group, partition, error
        )
        actions = self._start_move(partition, name, source=None, known=False)
        self.owner.pop(partition, None)
        # the failed runner stops before the new one starts, but its lease is waited out
        self._fence(self.moves[partition], lease=True)
        return actions

    def _recovered_now(self, move: Move) -> bool:
        st = self.last.get((move.target, move.partition))
        return (
            st is not None
            and PartitionState(st.state) is PartitionState.RECOVERED
            and st.epoch == move.epoch
        )

    def _advance_moves(self) -> list[Action]:
        recovered = self._recovered_now
        if self.hold_go:
            if sum(recovered(m) for m in self.moves.values()) < self.partitions:
                return self._retire_idle()
            logger.info("group %s: every partition recovered; processing starts", self.group)
            self.hold_go = False
        actions: list[Action] = []
        for move in list(self.moves.values()):
            if not recovered(move):
                continue
            if move.phase is MovePhase.RECOVERING:
                if move.source is not None:
                    actions.append(Release(move.source, move.partition))
                    continue  # the epoch becomes current on the outcome (released)
                self._fence(move, lease=True)
            actions += self._go_if_usable(move)
        return actions + self._retire_idle()

    def _go_if_usable(self, move: Move) -> list[Action]:
        if move.phase is not MovePhase.FENCED or move.target not in self.actors:
            return []
        if not self._recovered_now(move):
            return []
        if not move.usable(self.clock(), self.zombies, self.alive_nodes):
            return []
        return [Go(move.target, move.partition, move.epoch)]

    def _retire_idle(self) -> list[Action]:
        idle = [a.name for a in self.workers() if not a.partitions]
        for name in idle:
            del self.actors[name]
            self.departed.add(name)
        return [Retire(tuple(idle))] if idle else []

    def _sweep(self, named: frozenset[str]) -> list[Action]:
        """Kill actors of the group that nobody tracks (left by an earlier coordinator)."""
        self.departed &= named  # gone from Ray's list: nothing left to skip
        actions: list[Action] = []
        for name in sorted(named - set(self.actors) - set(self.zombies) - self.departed):
            logger.warning("group %s: killing %s, an actor it does not track", self.group, name)
            self.departed.add(name)
            actions.append(Kill(name))
        return actions

    def _forget_zombies(self) -> None:
        """Stop asking about killed actors that no move waits for."""
        waited = set().union(*(m.blockers for m in self.moves.values())) if self.moves else set()
        for name in set(self.zombies) - waited:
            del self.zombies[name]

    def _ensure_standbys(self) -> list[Action]:
        """Keep ``standby_replicas`` standbys per partition, each on another node than the
        partition's owner where the cluster has one (see the module docstring)."""
        wanted = self.config.standby_replicas
        actions: list[Action] = []
        if not wanted:
            return actions
        hosts = self._hosts()
        for p in range(self.partitions):
            holder = self.actors.get(self.holder(p) or "")
            if holder is None or not holder.placed or holder.node_id is None:
                continue  # placed now, it could land on the owner's node once that is known
            owner_node = holder.node_id
            have = self.standbys_of(p)
            for standby in list(have):
                # placed where it was wanted, and the owner came onto its node since: move it
                if not (standby.placed and standby.node_id == owner_node == standby.wanted_node):
                    continue
                taken = {s.node_id for s in have if s is not standby and s.node_id}
                if standby_node(hosts, self._load(), owner_node, taken).shares_owner_node:
                    continue
                logger.info(
                    "group %s: partition %d's owner moved onto node %s of its standby %s; "
                    "moving the standby",
                    self.group,
                    p,
                    short_node(owner_node),
                    standby.name,
                )
                actions += self._kill(standby)
                have.remove(standby)
            while len(have) < wanted:
                taken = {s.node_id for s in have if s.node_id}
                place = standby_node(hosts, self._load(), owner_node, taken)
                name = f"{standby_prefix(self.group)}p{p}-{self._new_id()[:6]}"
                standby = TrackedActor(
                    name,
                    Role.STANDBY,
                    {p},
                    node_id=place.node,
                    wanted_node=place.node,
                    code=self.code,
                )
                self.actors[name] = standby
                have.append(standby)
                actions += [Spawn(name, Role.STANDBY, self._resources(place.node)), Follow(name, p)]
        return actions

    def _log_warnings(self) -> None:
        """Log each placement warning once, when it appears."""
        current = set(self.placement_warnings())
        for warning in sorted(current - self._warned):
            logger.warning("group %s: %s", self.group, warning)
        self._warned = current

    # -- the actor count ----------------------------------------------------------------------

    def _settled(self) -> bool:
        """Every partition runs under its owner and nothing moves."""
        if self.state is not GroupState.RUNNING or self.moves or self.hold_go:
            return False
        for p in range(self.partitions):
            owner = self.owner.get(p)
            st = self.last.get((owner, p)) if owner is not None else None
            if st is None or PartitionState(st.state) is not PartitionState.RUNNING:
                return False
        return True

    def _autoscale(self) -> bool:
        """Feed the autoscaler a sample of a settled group; adopt the count it decides.
        True if it decided a new count."""
        if self.autoscaler is None:
            return False
        if not self._settled():
            self.autoscaler.restart()
            return False
        owned = [self.last[(self.owner[p], p)] for p in range(self.partitions)]
        if not all(st.offsets and st.lag for st in owned):
            return False  # a runner that has not fetched yet: its lag is not known
        workers = len(self.workers())
        decision = self.autoscaler.observe(
            LagSample(
                at=self.clock(),
                actors=workers,
                lag=sum(sum(st.lag.values()) for st in owned),
                position=sum(sum(st.offsets.values()) for st in owned),
            )
        )
        if decision is None or decision.actors == self.target_actors:
            return False
        decided = ScalingDecision(self.wall(), workers, decision.actors, decision.reason)
        self.decisions.append(decided)
        logger.info(
            "group %s: autoscaling %d -> %d actors: %s",
            self.group,
            workers,
            decision.actors,
            decision.reason,
        )
        self.target_actors = decision.actors
        self.autoscaler.restart()
        return True

    def _resize(self, *, at_once: bool = False) -> list[Action]:
        """Bring a group settled for RESIZE_SETTLE seconds (``at_once``: the autoscaler just
        chose a new count) to the planned actor count and sizes with the fewest live moves
        (after a failover promoted standbys, or for a new autoscaled count)."""
        if not self._settled():
            self._settled_since = None
            return []
        now = self.clock()
        if self._settled_since is None:
            self._settled_since = now
        if not at_once and now - self._settled_since < RESIZE_SETTLE:
            return []
        workers = self.workers()
        plan = rebalance(
            {w.name: set(w.partitions) for w in workers},
            self.partitions,
            len(self._plan()),
            {w.name: w.node_id for w in workers},
        )
        if not plan:
            return []
        logger.info(
            "group %s: %d actors -> %d (moving partitions %s)",
            self.group,
            len(workers),
            len(self._plan()),
            sorted([*plan.moves, *(p for part in plan.new for p in part)]),
        )
        self.state = GroupState.SCALING
        actions: list[Action] = []
        for p, target in sorted(plan.moves.items()):
            self.actors[target].partitions.add(p)
            actions += self._start_move(p, target, source=self.owner.get(p))
        for parts in plan.new:
            actions += self._spawn_worker(parts)
        return actions

    def _fail(self, error: BaseException) -> list[Action]:
        logger.error("group %s failed: %s", self.group, error)
        self.error = error
        self.state = GroupState.FAILED
        return self._remove_all()

    def _remove_all(self) -> list[Action]:
        actions: list[Action] = [
            Kill(a.name) for a in self.actors.values() if a.role is Role.STANDBY
        ]
        workers = tuple(a.name for a in self.workers())
        if workers:
            actions.append(Retire(workers))
        self.departed |= set(self.actors)
        self.actors.clear()
        return actions

    # -- after a restart of the coordinator ---------------------------------------------------

    def adopt(
        self,
        partitions: int,
        found: Mapping[str, tuple[Role, ActorReport]],
        alive_nodes: Iterable[str] = (),
        hosts: Iterable[str] | None = None,
    ) -> list[Action]:
        """Take over what a previous coordinator left: ``found`` is every named actor of the
        group with its role and one status round (the EpochTable was restored before; a
        lease it cannot know about counts from the ``granted_before`` it was restored with).

        Adopts as owner only an actor that answers and runs a partition under the epoch and
        name the record holds as current; keeps a move whose target recovers under the epoch
        last issued; releases every other partition an actor reports (stale); kills actors
        that did not answer. Every other partition gets a new owner (a standby where one
        answered, else new workers as the config plans) after a full lease, or once every
        killed actor is confirmed gone and nobody else can have held it.
        """
        self.partitions = partitions
        self._nodes(frozenset(alive_nodes), None if hosts is None else frozenset(hosts))
        self._configure_autoscaling(self.config)
        actions: list[Action] = []
        for name, (role, report) in found.items():
            if report.reach is Reach.ANSWERED:
                code = next((st.code for st in report.statuses if st.code), "")
                self.actors[name] = TrackedActor(name, role, code=code)
                continue
            logger.warning(
                "group %s: %s did not answer after the coordinator restarted (%s); killing it",
                self.group,
                name,
                report.reach.value,
            )
            self.zombies[name] = report.node_id
            self.departed.add(name)
            actions.append(Kill(name))
        for name, (_role, report) in found.items():
            if name in self.actors:
                actions += self._adopt_statuses(self.actors[name], report.statuses)
        for move in self.moves.values():
            if move.phase is MovePhase.RECOVERING:
                move.source = self.owner.get(move.partition)
                if move.source is None:  # its source is gone: fence it as an orphan
                    move.known, move.blockers = False, set(self.zombies)
                    self._fence(move, lease=True)
        for standby in [a for a in self.actors.values() if a.role is Role.STANDBY]:
            if standby.code != self.code:  # it would process with other code if promoted
                actions += self._kill(standby)
        orphans = [p for p in range(partitions) if p not in self.owner and p not in self.moves]
        promoted = set()
        for p in orphans:
            if (promotion := self._promote(p, replacing=None, known=False)) is not None:
                actions += promotion
                promoted.add(p)
        # back to the configured actors: every planned set of partitions that no actor holds
        # exactly moves to a new actor (orphans fenced at once, the others handed over)
        for parts in self._plan():
            if promoted & set(parts) or any(
                self._holding(w.name) == set(parts) for w in self.workers()
            ):
                continue
            actions += self._spawn_worker(parts, known=False)
        actions += self._retire_idle()
        if self.owner:
            self.hold_go = False  # processing had started: recover_ahead is over
        # actors on other code than the record's: an upgrade was under way, it goes on
        self.state = GroupState.UPGRADING if self._outdated() else GroupState.RUNNING
        logger.info(
            "group %s: adopted %d partition actors (owners of %s), %d partitions get new owners",
            self.group,
            len(self.workers()),
            sorted(self.owner),
            len(orphans),
        )
        return actions

    def _adopt_statuses(
        self, actor: TrackedActor, statuses: Iterable[PartitionStatus]
    ) -> list[Action]:
        actions: list[Action] = []
        for st in statuses:
            p, state = st.partition, PartitionState(st.state)
            if st.node_id:
                actor.node_id, actor.placed = st.node_id, True
            if actor.role is Role.STANDBY:
                actor.partitions.add(p)
                continue
            record = self.epochs.record(p)
            if state in _PROCESSING and self.epochs.adopt(p, st.epoch, actor.name):
                self.owner[p] = actor.name
                actor.partitions.add(p)
            elif state in _PREPARING and st.epoch == record.issued > record.current:
                self.moves[p] = Move(p, actor.name, st.epoch, None)
                actor.partitions.add(p)
            elif state in _PREPARING and (st.epoch, actor.name) == (record.current, record.owner):
                move = Move(p, actor.name, st.epoch, None, MovePhase.FENCED, known=False)
                move.lease_until = self.epochs.unknown_lease_end()
                move.blockers = set(self.zombies)
                self.moves[p] = move
                actor.partitions.add(p)
            else:
                logger.warning(
                    "group %s: %s holds partition %d under epoch %d (%s), which is not the "
                    "record's (current %d by %s); releasing it",
                    self.group,
                    actor.name,
                    p,
                    st.epoch,
                    state,
                    record.current,
                    record.owner,
                )
                actions.append(Release(actor.name, p))
        return actions
