"""CoordinatorPolicy: the coordinator's decisions as a pure state machine (no Ray, no Kafka).

Facts in, actions out. The coordinator actor (:mod:`goka_ray.actors.coordinator`) observes
the group's actors (each one's partition statuses, or that it did not answer, is not placed
yet, or is dead; which killed actors Ray confirms gone; the live nodes), hands that to the
policy, and carries out the actions the policy returns, in order, through the one class that
calls Ray. Time comes from an injected clock, so every rule is unit-tested without Ray and
without sleeping; epochs come from the :class:`~goka_ray.control.fencing.EpochTable`.

:class:`CoordinatorPolicy` is the one entry point (the shell's and the tests'): a facade
that calls one collaborator per concept, all reading and writing one shared record, the
:class:`~goka_ray.control.tracking.TrackedGroup`. Where each rule lives:

- :mod:`~goka_ray.control.handover`: a partition changes owner only through a *move*
  (recover under a new epoch, release, fence, go), and the conditions under which the new
  owner may go;
- :mod:`~goka_ray.control.roster`: new workers, retiring idle ones, killing, sweeping
  actors nobody tracks;
- :mod:`~goka_ray.control.standbys`: placing, moving, replacing and promoting standbys;
- :mod:`~goka_ray.control.failover`: dead, hung and lost actors replaced, failed partitions
  restarted, the group failed;
- :mod:`~goka_ray.control.scaling`: live scales, the autoscaler, resizing a settled group,
  and what a start or a scale asks of Ray (admission);
- :mod:`~goka_ray.control.upgrade`: the rolling upgrade, one worker at a time;
- :mod:`~goka_ray.control.adoption`: what a restarted coordinator takes over;
- :mod:`~goka_ray.control.reporting`: the group's status and placement warnings.

Invariants (each module states those of its part):
- Only the policy decides who owns a partition; at most one owner and one move per partition.
- Every method that changes the state returns the actions that carry the change out; an
  ``Assign`` carries an epoch recorded as issued before the action was returned.
- A status round is judged in one order: actors (dead, hung, lost), failed partitions, moves,
  the end of a scale, the upgrade's next step, the autoscaler and resize, standbys, the sweep
  of untracked actors; a failed group returns at once and then observes nothing more.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping

from goka_ray.control.actions import (
    Action,
    ActorReport,
    ActorResources,
    Observation,
    Role,
)
from goka_ray.control.adoption import Adoption
from goka_ray.control.failover import HUNG_AFTER_MISSES, Failover
from goka_ray.control.fencing import EpochTable
from goka_ray.control.handover import UNCONFIRMED_GRACE, Handover, Move, MovePhase
from goka_ray.control.reporting import StatusReport
from goka_ray.control.roster import Roster
from goka_ray.control.scaling import RESIZE_SETTLE, Scaling
from goka_ray.control.standbys import Standbys
from goka_ray.control.status import GroupState, GroupStatus, PartitionState, PartitionStatus
from goka_ray.control.totals import PartitionTotals
from goka_ray.control.tracking import TrackedActor, TrackedGroup
from goka_ray.control.upgrade import RollingUpgrade
from goka_ray.core.config import GroupConfig
from goka_ray.errors import GokaRayError

__all__ = [
    "HUNG_AFTER_MISSES",
    "RESIZE_SETTLE",
    "UNCONFIRMED_GRACE",
    "CoordinatorPolicy",
    "Move",
    "MovePhase",
    "TrackedActor",
]


class CoordinatorPolicy:
    """The ownership decisions of one processor group (see the module docstring).

    Every method that changes the state returns the actions that carry the change out.
    ``new_id`` makes actor names (unique hex strings; injected in tests). The attributes
    (``actors``, ``owner``, ``moves``, ``state``, ...) read the shared
    :class:`~goka_ray.control.tracking.TrackedGroup`.
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
        self._group = g = TrackedGroup(
            name=group,
            config=config,
            epochs=epochs,
            clock=clock,
            wall=wall,
            new_id=new_id or (lambda: uuid.uuid4().hex),
            code=code,
            totals=totals or PartitionTotals(),
            hold_go=config.recover_ahead,
        )
        self._handover = Handover(g)
        self._roster = Roster(g, self._handover)
        self._standbys = Standbys(g, self._handover, self._roster)
        self._failover = Failover(g, self._handover, self._roster, self._standbys)
        self._scaling = Scaling(g, self._handover, self._roster)
        self._upgrade = RollingUpgrade(g, self._roster, self._standbys)
        self._adoption = Adoption(
            g, self._handover, self._roster, self._standbys, self._scaling, self._upgrade
        )
        self._report = StatusReport(g)

    # -- the tracked group --------------------------------------------------------------------

    @property
    def group(self) -> str:
        return self._group.name

    @property
    def config(self) -> GroupConfig:
        return self._group.config

    @property
    def epochs(self) -> EpochTable:
        return self._group.epochs

    @property
    def lease_duration(self) -> float:
        return self._group.epochs.lease_duration

    @property
    def clock(self) -> Callable[[], float]:
        return self._group.clock

    @property
    def state(self) -> GroupState:
        return self._group.state

    @property
    def partitions(self) -> int:
        return self._group.partitions

    @property
    def actors(self) -> dict[str, TrackedActor]:
        return self._group.actors

    @property
    def owner(self) -> dict[int, str]:
        return self._group.owner

    @property
    def moves(self) -> dict[int, Move]:
        return self._group.moves

    @property
    def restarts(self) -> dict[int, int]:
        return self._group.restarts

    @property
    def zombies(self) -> dict[str, str | None]:
        """Killed actors whose end Ray has not confirmed: name -> node (None: unknown)."""
        return self._group.zombies

    @property
    def error(self) -> BaseException | None:
        return self._group.error

    @property
    def target_actors(self) -> int | None:
        """The actor count the autoscaler chose (None: not autoscaled)."""
        return self._group.target_actors

    @property
    def code(self) -> str:
        """The fingerprint of the code the group runs (or is upgrading to)."""
        return self._group.code

    @property
    def totals(self) -> PartitionTotals:
        return self._group.totals

    # -- queries ------------------------------------------------------------------------------

    @property
    def failed(self) -> bool:
        return self._group.state is GroupState.FAILED

    @property
    def upgrading(self) -> bool:
        return self._upgrade.upgrading

    def workers(self) -> list[TrackedActor]:
        return self._group.workers()

    def standbys_of(self, partition: int) -> list[TrackedActor]:
        """The standbys of ``partition``, oldest first."""
        return self._group.standbys_of(partition)

    def holder(self, partition: int) -> str | None:
        """The actor that owns ``partition`` or is the target of its move."""
        return self._group.holder(partition)

    def _holding(self, name: str) -> set[int]:
        """The partitions ``name`` owns or is the target of, once its moves are done."""
        return self._group.holding(name)

    def pending(self) -> list[TrackedActor]:
        """The actors Ray has not placed yet (as of the last status round)."""
        return self._group.pending()

    def status(self, waiting: str | None = None) -> GroupStatus:
        """The group as last observed: per partition, the status of its owner (or target),
        ``pending`` while that actor is not placed, with the counts of all its owners.
        ``waiting``: why actors are pending (the shell knows the cluster's resources)."""
        return self._report.status(waiting)

    def placement_warnings(self) -> list[str]:
        """What placement could not do on this cluster, each saying what to do about it."""
        return self._report.placement_warnings()

    def visit_targets(self) -> list[tuple[str, int]]:
        """(owner, partition) of every partition, for a visit; GokaRayError unless running."""
        g = self._group
        if g.state is not GroupState.RUNNING or g.moves:
            raise GokaRayError(
                f"group {g.name} is {g.state}"
                + (f" with partitions {sorted(g.moves)} moving" if g.moves else "")
                + "; visit when every partition runs"
            )
        return [(name, p) for p, name in sorted(g.owner.items())]

    def renew(self, partition: int, epoch: int, owner: str | None) -> bool:
        """A lease renewal: does ``owner`` still hold the current ``epoch`` of ``partition``?"""
        return self._group.epochs.renew(partition, epoch, owner)

    # -- what the commands would ask of Ray ---------------------------------------------------

    def start_demand(self, partitions: int) -> list[ActorResources]:
        """The actors a start places: every planned worker (as many as the autoscaler starts
        with, where it scales the group) and every standby."""
        return self._scaling.start_demand(partitions)

    def scale_demand(self, config: GroupConfig) -> list[ActorResources]:
        """The actors a scale to ``config`` would start ([]: nothing moves): a new worker
        for every planned set of partitions, started before the old ones hand over."""
        return self._scaling.scale_demand(config)

    def upgrade_demand(self) -> list[ActorResources]:
        """What one step of an upgrade starts: one worker (the old one retires after it)."""
        return self._upgrade.demand()

    # -- commands -----------------------------------------------------------------------------

    def start(
        self, partitions: int, alive_nodes: Iterable[str] = (), hosts: Iterable[str] | None = None
    ) -> list[Action]:
        """Place the partitions on actors as the config plans (their standbys follow once
        the owners' nodes are known). ``hosts``: the alive nodes that can host an actor of
        the group (default: every alive node)."""
        g = self._group
        g.partitions = partitions
        g.set_nodes(frozenset(alive_nodes), None if hosts is None else frozenset(hosts))
        self._scaling.configure(g.config)
        actions: list[Action] = []
        for parts in g.plan():
            actions += self._roster.spawn_worker(parts)
        g.state = GroupState.RUNNING
        return actions

    def scale(self, config: GroupConfig) -> list[Action] | None:
        """Apply a changed config live; None when nothing needs to move.

        GokaRayError if the group is neither running nor scaling.
        """
        return self._scaling.scale(config)

    def upgrade(self, code: str) -> list[Action] | None:
        """Move the group to the code whose fingerprint is ``code``, one worker at a time,
        each through a live hand-over (a new worker recovers its partitions, the old one
        releases them, the new one processes); None when every actor runs it already.

        Standbys running other code are replaced at once (a promoted standby processes with
        its own code). An upgrade that comes while a scale (the user's or the autoscaler's)
        moves partitions starts once those moves are done. GokaRayError unless the group is
        running, scaling or upgrading (a newer code then replaces the one being rolled out).
        """
        return self._upgrade.upgrade(code)

    def stop(self) -> list[Action]:
        """Stop the group: every actor commits and closes, then is removed."""
        if self._group.state is not GroupState.FAILED:
            self._group.state = GroupState.STOPPED
        return self._roster.remove_all()

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
        return self._adoption.adopt(partitions, found, alive_nodes, hosts)

    # -- the status round ---------------------------------------------------------------------

    def observe(self, obs: Observation) -> list[Action]:
        """Judge one status round: replace dead and hung actors, restart failed partitions,
        advance moves, keep standbys, retire idle actors, kill actors nobody tracks."""
        g = self._group
        if g.state in (GroupState.FAILED, GroupState.STOPPED):
            return []
        g.set_nodes(obs.alive_nodes, obs.hosts)
        for name in obs.gone:
            g.zombies.pop(name, None)
        actions = self._judge_actors(obs)
        if self.failed:
            return actions
        actions += self._handover.advance() + self._roster.retire_idle()
        if g.state is GroupState.SCALING and not g.moves:
            g.state = GroupState.RUNNING
        actions += self._upgrade.step()
        actions += self._scaling.resize(at_once=self._scaling.autoscale())
        actions += self._standbys.ensure()
        if obs.named is not None:
            actions += self._roster.sweep(obs.named)
        self._roster.forget_zombies()
        self._report.log_warnings()
        return actions

    def _judge_actors(self, obs: Observation) -> list[Action]:
        """The faults of a round: every reporting actor judged (dead, hung, lost actors
        replaced), the statuses recorded and counted, failed partitions restarted."""
        g = self._group
        actions: list[Action] = []
        statuses: dict[tuple[str, int], PartitionStatus] = {}
        for name, actor in list(g.actors.items()):
            report = obs.actors.get(name)
            if report is None or name not in g.actors:
                continue  # spawned after the round began, or replaced meanwhile
            actions += self._failover.judge(actor, report, statuses)
            if self.failed:
                return actions
        g.last = statuses
        for (name, _p), st in statuses.items():
            g.totals.observe(name, st)
        for (name, p), st in statuses.items():
            if PartitionState(st.state) is PartitionState.FAILED and self._handover.holds(
                name, p, st
            ):
                actions += self._failover.on_failure(name, p, obs.actors[name].failures.get(p))
                if self.failed:
                    return actions
        return actions

    # -- outcomes of actions ------------------------------------------------------------------

    def released(
        self, actor: str, partition: int, stopped: bool, final: PartitionStatus | None = None
    ) -> list[Action]:
        """Outcome of a Release: ``stopped`` if the actor confirmed the partition stopped;
        ``final``: the partition's last status there (its final counts), if it reported one."""
        actions = self._handover.released(actor, partition, stopped, final)
        return actions + self._roster.retire_idle()

    def retired(self, actors: Iterable[str], confirmed: bool) -> None:
        """Outcome of a Retire: ``confirmed`` if every actor said it stopped (committed and
        closed). Their partitions then have no owner that could still write."""
        self._roster.retired(actors, confirmed)

    def went(self, actor: str, partition: int, epoch: int, accepted: bool) -> list[Action]:
        """Outcome of a Go: the target accepted (it processes ``partition`` under ``epoch``)."""
        self._handover.went(actor, partition, epoch, accepted)
        return []
