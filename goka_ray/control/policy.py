"""CoordinatorPolicy: the coordinator's decisions as a pure state machine (no Ray, no Kafka).

Facts in, actions out. The coordinator actor (:mod:`goka_ray.actors.coordinator`) observes
the group's actors (each one's partition statuses, or that it did not answer, is not placed
yet, or is dead) and the live nodes, hands that to the policy, and carries out the actions the
policy returns, in order, through the one class that calls Ray. Time comes from an injected
clock, so every rule here is unit-tested without Ray and without sleeping.

A partition changes owner only through a *move*, always in this order:
  1. ``RECOVERING``: the target actor was assigned the partition under a new epoch and
     recovers its table while the source (the current owner, if any) goes on processing;
  2. ``HANDING_OVER``: the target reported ``recovered``; the new epoch becomes current, so
     the source's lease can no longer be renewed; the source is told to release the partition;
  3. the target is told to go once the source confirmed it stopped, or every lease of the old
     epoch has expired; then the target is the owner.

Invariants:
- Only the policy decides who owns a partition; there is at most one owner and one move per
  partition, and an actor holds exactly the partitions it owns, moves to, or stands by for.
- ``Go`` is only ever returned for the epoch the :class:`~goka_ray.control.fencing.EpochTable`
  holds as current, and only once the previous owner released or its lease is over.
- An actor the policy stops tracking (dead, hung, idle, or the group stops) gets a ``Kill`` or
  ``Retire`` action.
"""

from __future__ import annotations

import enum
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from goka_ray.control.assignment import plan_actors
from goka_ray.control.fencing import EpochTable
from goka_ray.control.names import standby_prefix, worker_prefix
from goka_ray.control.status import GroupState, GroupStatus, PartitionState, PartitionStatus
from goka_ray.core.config import GroupConfig
from goka_ray.errors import GokaRayError, ProcessingError

__all__ = [
    "HUNG_AFTER_MISSES",
    "Action",
    "ActorReport",
    "ActorResources",
    "Assign",
    "CoordinatorPolicy",
    "Follow",
    "Go",
    "Kill",
    "Move",
    "MovePhase",
    "Observation",
    "Reach",
    "Release",
    "Retire",
    "Role",
    "Spawn",
    "TrackedActor",
]

logger = logging.getLogger(__name__)

#: status rounds in a row an actor may leave unanswered before it counts as hung
HUNG_AFTER_MISSES = 3


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


class MovePhase(enum.Enum):
    """Where a move of a partition to a new owner stands (see the module docstring)."""

    RECOVERING = "recovering"
    HANDING_OVER = "handing over"


# -- observations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ActorReport:
    """What one status round found out about one actor."""

    reach: Reach
    statuses: tuple[PartitionStatus, ...] = ()
    #: errors of the partitions it reports as failed (None: it could not say)
    failures: Mapping[int, BaseException | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Observation:
    """One status round over every tracked actor (an actor missing here is not judged)."""

    actors: Mapping[str, ActorReport]
    alive_nodes: frozenset[str] = frozenset()


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
    """Ask ``actor`` to stop ``partition`` gracefully; report with :meth:`~CoordinatorPolicy.
    released` whether it confirmed it stopped."""

    actor: str
    partition: int


@dataclass(frozen=True)
class Go:
    """Let ``actor`` process ``partition`` under ``epoch``; report with
    :meth:`~CoordinatorPolicy.went` once it accepted."""

    actor: str
    partition: int
    epoch: int


@dataclass(frozen=True)
class Retire:
    """Stop these actors gracefully (finish the batch, commit, close), then remove them."""

    actors: tuple[str, ...]


@dataclass(frozen=True)
class Kill:
    """Remove ``actor`` at once (it is dead, hung, or a standby no longer needed)."""

    actor: str


Action = Spawn | Assign | Follow | Release | Go | Retire | Kill


# -- the state ------------------------------------------------------------------------------


@dataclass
class TrackedActor:
    """A partition actor the policy tracks."""

    name: str
    role: Role
    #: the partitions it owns, moves to, or (a standby) follows
    partitions: set[int] = field(default_factory=set)
    node_id: str | None = None
    #: status rounds in a row it left unanswered
    misses: int = 0


@dataclass
class Move:
    """A partition on its way to a new owner (see the module docstring)."""

    partition: int
    target: str
    epoch: int
    #: the owner that still holds the partition and must release it (None: none, or gone)
    source: str | None
    phase: MovePhase = MovePhase.RECOVERING
    #: the previous owner's process is known to be gone: no lease to wait out
    source_gone: bool = False


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
    ) -> None:
        self.group = group
        self.config = config
        self.epochs = epochs
        self.clock = clock
        self._new_id = new_id or (lambda: uuid.uuid4().hex)
        self.state = GroupState.STARTING
        self.partitions = 0
        self.actors: dict[str, TrackedActor] = {}
        self.owner: dict[int, str] = {}
        self.moves: dict[int, Move] = {}
        self.restarts: dict[int, int] = {}
        self.error: BaseException | None = None
        #: recover_ahead: no partition gets Go until every partition has recovered
        self.hold_go = config.recover_ahead
        #: the last statuses seen, by (actor, partition)
        self.last: dict[tuple[str, int], PartitionStatus] = {}

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

    def status(self) -> GroupStatus:
        """The group as last observed: per partition, the status of its owner (or target)."""
        parts = []
        for p in range(self.partitions):
            holder = self.holder(p)
            st = self.last.get((holder, p)) if holder is not None else None
            st = st or PartitionStatus(partition=p, state=PartitionState.STARTING)
            parts.append(
                replace(st, restarts=self.restarts.get(p, 0), standbys=len(self.standbys_of(p)))
            )
        error = None if self.error is None else f"{type(self.error).__name__}: {self.error}"
        return GroupStatus(self.group, self.state, parts, error)

    def visit_targets(self) -> list[tuple[str, int]]:
        """(owner, partition) of every partition, for a visit; GokaRayError unless running."""
        if self.state is not GroupState.RUNNING or self.moves:
            raise GokaRayError(
                f"group {self.group} is {self.state}"
                + (f" with partitions {sorted(self.moves)} moving" if self.moves else "")
                + "; visit when every partition runs"
            )
        return [(name, p) for p, name in sorted(self.owner.items())]

    def renew(self, partition: int, epoch: int) -> bool:
        """A lease renewal from a partition actor: is ``epoch`` still current?"""
        return self.epochs.renew(partition, epoch)

    # -- commands -----------------------------------------------------------------------------

    def start(self, partitions: int, alive_nodes: Iterable[str] = ()) -> list[Action]:
        """Place the partitions on actors as the config plans, and their standbys."""
        self.partitions = partitions
        actions: list[Action] = []
        for parts in self._plan():
            actions += self._spawn_worker(parts)
        actions += self._ensure_standbys(frozenset(alive_nodes))
        self.state = GroupState.RUNNING
        return actions

    def scale(self, config: GroupConfig) -> list[Action] | None:
        """Apply a changed config live; None when nothing needs to move.

        GokaRayError if the group is neither running nor scaling.
        """
        if self.state not in (GroupState.RUNNING, GroupState.SCALING):
            raise GokaRayError(f"group {self.group} is {self.state}; cannot scale it")
        old, self.config = self.config, config
        plan = self._plan()
        current = sorted(sorted(a.partitions) for a in self.workers())
        resources = (config.num_cpus, config.memory, config.placement)
        if plan == current and resources == (old.num_cpus, old.memory, old.placement):
            return None
        self.state = GroupState.SCALING
        actions: list[Action] = []
        for parts in plan:
            actions += self._spawn_worker(parts)
        return actions

    def stop(self) -> list[Action]:
        """Stop the group: every actor commits and closes, then is removed."""
        if self.state is not GroupState.FAILED:
            self.state = GroupState.STOPPED
        return self._remove_all()

    # -- the status round ---------------------------------------------------------------------

    def observe(self, obs: Observation) -> list[Action]:
        """Judge one status round: replace dead and hung actors, restart failed partitions,
        advance moves, keep standbys, retire idle actors."""
        if self.state in (GroupState.FAILED, GroupState.STOPPED):
            return []
        actions: list[Action] = []
        statuses: dict[tuple[str, int], PartitionStatus] = {}
        for name, actor in list(self.actors.items()):
            report = obs.actors.get(name)
            if report is None or name not in self.actors:
                continue  # spawned after the round began, or replaced meanwhile
            if report.reach is Reach.ANSWERED:
                actor.misses = 0
                for st in report.statuses:
                    statuses[(name, st.partition)] = st
                    actor.node_id = st.node_id or actor.node_id
            elif report.reach is Reach.PENDING:
                continue  # not placed yet: waiting for resources is not hanging
            elif actor.role is Role.STANDBY:
                logger.warning("group %s: standby %s lost (%s)", self.group, name, report.reach)
                del self.actors[name]
                actions.append(Kill(name))
            elif report.reach is Reach.DEAD:
                logger.warning("group %s: %s died; replacing it", self.group, name)
                actions += self._replace(actor, obs.alive_nodes, died=True)
            else:
                actor.misses += 1
                if actor.misses >= HUNG_AFTER_MISSES:
                    logger.warning("group %s: %s is hung; replacing it", self.group, name)
                    actions += self._replace(actor, obs.alive_nodes, died=False)
            if self.failed:
                return actions
        self.last = statuses
        for (name, p), st in statuses.items():
            if PartitionState(st.state) is PartitionState.FAILED and self._holds(name, p, st):
                report = obs.actors[name]
                actions += self._on_failure(name, p, report.failures.get(p))
                if self.failed:
                    return actions
        actions += self._advance_moves(statuses)
        if self.state is GroupState.SCALING and not self.moves:
            self.state = GroupState.RUNNING
        actions += self._ensure_standbys(obs.alive_nodes)
        return actions

    def released(self, actor: str, partition: int, stopped: bool) -> list[Action]:
        """Outcome of a Release: ``stopped`` if the actor confirmed the partition stopped."""
        tracked = self.actors.get(actor)
        if tracked is not None:
            tracked.partitions.discard(partition)
        move = self.moves.get(partition)
        if move is None or move.source != actor:
            return self._retire_idle()
        move.source = None
        if stopped:
            self.epochs.released(partition)  # no need to wait out its lease
        else:
            logger.warning(
                "group %s: %s did not confirm it released partition %d; waiting for its lease",
                self.group,
                actor,
                partition,
            )
        return self._go_if_usable(move) + self._retire_idle()

    def went(self, actor: str, partition: int, epoch: int, accepted: bool) -> list[Action]:
        """Outcome of a Go: the target accepted (it processes ``partition`` under ``epoch``)."""
        move = self.moves.get(partition)
        if not accepted or move is None or (move.target, move.epoch) != (actor, epoch):
            return []
        self.owner[partition] = actor
        del self.moves[partition]
        return []

    # -- rules --------------------------------------------------------------------------------

    def _plan(self) -> list[list[int]]:
        cfg = self.config
        return plan_actors(
            self.partitions, partitions_per_actor=cfg.partitions_per_actor, actors=cfg.actors
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

    def _spawn_worker(self, partitions: list[int], *, near: str | None = None) -> list[Action]:
        """A new worker that ``partitions`` move to (``near``: preferred node)."""
        name = f"{worker_prefix(self.group)}{self._new_id()[:8]}"
        self.actors[name] = TrackedActor(name, Role.WORKER, set(partitions), node_id=near)
        actions: list[Action] = [Spawn(name, Role.WORKER, self._resources(near))]
        for p in partitions:
            epoch = self.epochs.current(p) + 1
            actions.append(Assign(name, p, epoch))
            self.moves[p] = Move(p, name, epoch, self.owner.get(p))
        return actions

    def _replace(
        self, actor: TrackedActor, alive_nodes: frozenset[str], *, died: bool
    ) -> list[Action]:
        """Move the partitions of a dead or hung worker to a standby or a new worker.

        If Ray reports the actor dead while its node is alive, its process is gone and cannot
        write any more, so the new owner need not wait out the old lease. A hung actor, or one
        on a lost node (possibly a partitioned zombie), is waited out.
        """
        gone = died and actor.node_id is not None and actor.node_id in alive_nodes
        name = actor.name
        del self.actors[name]
        actions: list[Action] = [Kill(name)]
        lost = sorted(p for p in actor.partitions if self.holder(p) == name)
        for p in lost:
            self.owner.pop(p, None)
            self.moves.pop(p, None)
            self.restarts[p] = self.restarts.get(p, 0) + 1
        for move in self.moves.values():
            if move.source == name:
                move.source = None  # moves away from it no longer wait for its release
        if any(self.restarts[p] > self.config.max_restarts for p in lost):
            return actions + self._fail(
                GokaRayError(
                    f"group {self.group}: partitions {lost} were restarted more than "
                    f"max_restarts={self.config.max_restarts} times; see the actor logs"
                )
            )
        rest = []
        for p in lost:
            promoted = self._promote(p)
            if promoted is None:
                rest.append(p)
            else:
                actions += promoted
        if rest:
            actions += self._spawn_worker(rest, near=actor.node_id)
        for p in lost:
            if p in self.moves:
                self.moves[p].source_gone = gone
        return actions

    def _promote(self, partition: int) -> list[Action] | None:
        """Move ``partition`` to its oldest standby; None if it has none."""
        candidates = self.standbys_of(partition)
        if not candidates:
            return None
        standby = candidates[0]
        standby.role = Role.WORKER
        epoch = self.epochs.current(partition) + 1
        self.moves[partition] = Move(partition, standby.name, epoch, None)
        logger.warning(
            "group %s: partition %d fails over to its standby %s",
            self.group,
            partition,
            standby.name,
        )
        return [Assign(standby.name, partition, epoch)]

    def _on_failure(self, name: str, partition: int, error: BaseException | None) -> list[Action]:
        if isinstance(error, ProcessingError):
            return self._fail(error)  # a callback failed: it would fail again, stop the group
        self.restarts[partition] = self.restarts.get(partition, 0) + 1
        if self.restarts[partition] > self.config.max_restarts:
            return self._fail(error or GokaRayError(f"partition {partition} failed"))
        logger.warning(
            "group %s partition %d failed (%s); restarting it", self.group, partition, error
        )
        epoch = self.epochs.current(partition) + 1
        self.owner.pop(partition, None)
        self.moves[partition] = Move(partition, name, epoch, None)
        return [Assign(name, partition, epoch)]

    def _advance_moves(self, statuses: Mapping[tuple[str, int], PartitionStatus]) -> list[Action]:
        def recovered(move: Move) -> bool:
            st = statuses.get((move.target, move.partition))
            return (
                st is not None
                and PartitionState(st.state) is PartitionState.RECOVERED
                and st.epoch == move.epoch
            )

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
                fresh = move.source is None and move.epoch == 1
                epoch = self.epochs.bump(move.partition, fresh=fresh)
                assert epoch == move.epoch, (epoch, move.epoch)
                move.phase = MovePhase.HANDING_OVER
                if move.source_gone:
                    self.epochs.released(move.partition)
                if move.source is not None:
                    actions.append(Release(move.source, move.partition))
                    continue  # Go follows the outcome (released)
            if move.source is None:
                actions += self._go_if_usable(move)
        return actions + self._retire_idle()

    def _go_if_usable(self, move: Move) -> list[Action]:
        if move.phase is not MovePhase.HANDING_OVER or move.source is not None:
            return []
        if self.epochs.wait_usable(move.partition) > 0 or move.target not in self.actors:
            return []
        return [Go(move.target, move.partition, move.epoch)]

    def _retire_idle(self) -> list[Action]:
        idle = [a.name for a in self.workers() if not a.partitions]
        for name in idle:
            del self.actors[name]
        return [Retire(tuple(idle))] if idle else []

    def _ensure_standbys(self, alive_nodes: frozenset[str]) -> list[Action]:
        """Start standbys until every partition has ``standby_replicas`` of them."""
        wanted = self.config.standby_replicas
        actions: list[Action] = []
        if not wanted:
            return actions
        nodes = sorted(alive_nodes)
        for p in range(self.partitions):
            have = self.standbys_of(p)
            while len(have) < wanted:
                holder = self.actors.get(self.holder(p) or "")
                busy = {holder.node_id if holder else None} | {a.node_id for a in have}
                others = [n for n in nodes if n not in busy]
                # another node than the owner's where there is one: it must survive that node
                node = others[p % len(others)] if others else None
                name = f"{standby_prefix(self.group)}p{p}-{self._new_id()[:6]}"
                standby = TrackedActor(name, Role.STANDBY, {p}, node_id=node)
                self.actors[name] = standby
                have.append(standby)
                actions += [Spawn(name, Role.STANDBY, self._resources(node)), Follow(name, p)]
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
        self.actors.clear()
        return actions

    # -- after a restart of the coordinator ---------------------------------------------------

    def adopt(self, partitions: int, found: Mapping[str, tuple[Role, ActorReport]]) -> list[Action]:
        """Take over the actors of the group that a previous coordinator left running.

        ``found``: every named actor of the group with its role and one status round.
        """
        self.partitions = partitions
        running: dict[int, tuple[str, int]] = {}
        waiting: dict[int, tuple[str, int]] = {}
        for name, (role, report) in found.items():
            if report.reach is not Reach.ANSWERED:
                logger.warning("group %s: cannot adopt %s (%s)", self.group, name, report.reach)
                continue
            actor = TrackedActor(name, role)
            self.actors[name] = actor
            for st in report.statuses:
                actor.partitions.add(st.partition)
                actor.node_id = st.node_id
                if role is Role.STANDBY:
                    continue
                self.epochs.adopt(st.partition, st.epoch)
                state = PartitionState(st.state)
                target = running if state is PartitionState.RUNNING else waiting
                if st.partition not in target or target[st.partition][1] < st.epoch:
                    target[st.partition] = (name, st.epoch)
        for p, (name, _epoch) in running.items():
            self.owner[p] = name
        for p, (name, epoch) in waiting.items():
            if p not in self.owner:
                self.moves[p] = Move(p, name, epoch, None, phase=MovePhase.HANDING_OVER)
        actions: list[Action] = []
        for p in range(partitions):
            if p not in self.owner and p not in self.moves:
                actions += self._spawn_worker([p])
        self.state = GroupState.RUNNING
        logger.info("group %s: adopted %d partition actors", self.group, len(self.workers()))
        return actions
