"""Failover: what a status round's faults do to the group (dead, hung, lost and failed).

Each actor's part of a status round is judged: it answered, is not placed yet (``pending``:
waiting for resources), is silent, or is dead. A worker that is dead, silent for
HUNG_AFTER_MISSES rounds in a row while Ray reports it placed, or silent on a lost node is
killed and replaced: its partitions are promoted to standbys where they have one, else moved
to a new worker near it. A partition that reports ``failed`` is restarted on its actor under
a new epoch. A callback's error (:class:`~goka_ray.errors.ProcessingError`), or partitions
restarted more than ``max_restarts`` times, fail the group: every actor is removed.

Invariants:
- An actor is replaced only when it is dead, or silent for HUNG_AFTER_MISSES rounds while Ray
  reports it placed, or silent on a lost node (at once); waiting for placement is never a miss
  or a restart.
- An owner that does not answer is killed before its partitions move, and its process counts
  as a possible writer until Ray confirms it gone or its node is lost and a lease has passed.
- A failed or replaced partition's new move is fenced at once: its older owner's lease runs
  out while the new one recovers.
"""

from __future__ import annotations

import logging

from goka_ray.control.actions import Action, ActorReport, Reach, Role
from goka_ray.control.handover import Handover, MovePhase
from goka_ray.control.placement import short_node
from goka_ray.control.roster import Roster
from goka_ray.control.standbys import Standbys
from goka_ray.control.status import GroupState, PartitionStatus
from goka_ray.control.tracking import POLICY_LOG, TrackedActor, TrackedGroup
from goka_ray.errors import GokaRayError, ProcessingError

__all__ = ["HUNG_AFTER_MISSES", "Failover"]

logger = logging.getLogger(POLICY_LOG)

#: status rounds in a row an actor may leave unanswered before it counts as hung
HUNG_AFTER_MISSES = 3


class Failover:
    """Replaces dead, hung and lost actors, restarts failed partitions, fails the group."""

    def __init__(
        self, group: TrackedGroup, handover: Handover, roster: Roster, standbys: Standbys
    ) -> None:
        self.group = group
        self.handover = handover
        self.roster = roster
        self.standbys = standbys

    def judge(
        self,
        actor: TrackedActor,
        report: ActorReport,
        statuses: dict[tuple[str, int], PartitionStatus],
    ) -> list[Action]:
        """One actor's part of a status round: it answered, is not placed yet, is silent
        (hung after HUNG_AFTER_MISSES rounds in a row) or dead; hung and dead ones go."""
        g = self.group
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
            case Reach.SILENT if g.on_lost_node(actor):
                logger.warning(
                    "group %s: %s does not answer and its node %s is lost; replacing it",
                    g.name,
                    actor.name,
                    short_node(actor.node_id),
                )
            case Reach.SILENT:
                actor.misses += 1
                if actor.misses < HUNG_AFTER_MISSES:
                    return []
                logger.warning("group %s: %s is hung; killing it", g.name, actor.name)
            case Reach.DEAD:
                logger.warning("group %s: %s died", g.name, actor.name)
        if actor.role is Role.STANDBY:
            return self.roster.kill(actor)  # a new standby follows (Standbys.ensure)
        return self.replace(actor)

    def replace(self, actor: TrackedActor) -> list[Action]:
        """Kill a dead or hung worker and move its partitions to standbys or a new worker.

        Its partitions wait until Ray confirms its process gone, or, if its node is lost, a
        full lease. Moves away from it no longer wait for its release.
        """
        g = self.group
        name = actor.name
        actions = self.roster.kill(actor)
        lost = sorted(p for p in actor.partitions if g.holder(p) == name)
        owned = {p for p in lost if g.owner.get(p) == name}
        called_off = {p: g.moves.pop(p) for p in lost if p in g.moves}
        for p in lost:
            g.restarts[p] = g.restarts.get(p, 0) + 1
        for move in g.moves.values():
            if move.source == name:
                move.source = None
                move.blockers.add(name)
        if any(g.restarts[p] > g.config.max_restarts for p in lost):
            return actions + self.fail(
                GokaRayError(
                    f"group {g.name}: partitions {lost} were restarted more than "
                    f"max_restarts={g.config.max_restarts} times; see the actor logs"
                )
            )
        # a move to the dead actor that had not started fencing: its source still owns
        unfenced = [
            p for p, m in called_off.items() if m.phase is MovePhase.RECOVERING and p not in owned
        ]
        for p in unfenced:
            actions += self.roster.spawn_worker([p], near=actor.node_id)
        rest = []
        for p in (p for p in lost if p not in unfenced):
            g.owner.pop(p, None)
            if p in called_off:  # its waits carry over to the next move
                g.moves[p] = called_off[p]
            promoted = self.standbys.promote(p, replacing=name, known=True)
            if promoted is None:
                rest.append(p)
            else:
                actions += promoted
        if rest:
            actions += self.roster.spawn_worker(rest, near=actor.node_id, replacing=name)
        return actions

    def on_failure(self, name: str, partition: int, error: BaseException | None) -> list[Action]:
        """A partition ``name`` holds reported ``failed`` with ``error`` (None: unknown)."""
        g = self.group
        if isinstance(error, ProcessingError):
            return self.fail(error)  # a callback failed: it would fail again, stop the group
        g.restarts[partition] = g.restarts.get(partition, 0) + 1
        if g.restarts[partition] > g.config.max_restarts:
            return self.fail(error or GokaRayError(f"partition {partition} failed"))
        logger.warning("group %s partition %d failed (%s); restarting it", g.name, partition, error)
        actions = self.handover.start(partition, name, source=None, known=False)
        g.owner.pop(partition, None)
        # the failed runner stops before the new one starts, but its lease is waited out
        self.handover.fence_now(partition)
        return actions

    def fail(self, error: BaseException) -> list[Action]:
        """The group fails with ``error``: every actor is removed."""
        logger.error("group %s failed: %s", self.group.name, error)
        self.group.error = error
        self.group.state = GroupState.FAILED
        return self.roster.remove_all()
