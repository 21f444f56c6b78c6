"""Adoption: a restarted coordinator takes over what the previous one left.

The shell restores the :class:`~goka_ray.control.fencing.EpochTable` from its durable record
first, then hands over every named actor of the group with its role and one status round.
What the record says decides: an actor that answers and runs a partition under the epoch and
name the record holds as current is adopted as its owner; a target that recovers under the
epoch last issued keeps its move; everything else is released (stale partitions) or killed
(silent, dead, unplaced actors). Every other partition gets a new owner: a standby where one
answered, else new workers as the config plans, after a full lease, or once every killed actor
is confirmed gone and nobody else can have held it.

Invariants:
- Only an actor the record names as the current owner of a partition, under its current
  epoch, is adopted as owner; a partition without an adopted owner waits out a full lease
  (the coordinator cannot know which leases are outstanding).
- An actor that did not answer is killed and counts as a possible writer of every partition
  without an owner until Ray confirms it gone.
- Standbys running other code than the record's are killed (promoted, they would process
  with it); workers running other code mean an upgrade was under way, and it goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from goka_ray.control.actions import Action, ActorReport, Kill, Reach, Release, Role
from goka_ray.control.handover import Handover, Move, MovePhase
from goka_ray.control.roster import Roster
from goka_ray.control.scaling import Scaling
from goka_ray.control.standbys import Standbys
from goka_ray.control.status import GroupState, PartitionState, PartitionStatus
from goka_ray.control.tracking import POLICY_LOG, TrackedActor, TrackedGroup
from goka_ray.control.upgrade import RollingUpgrade

__all__ = ["Adoption"]

logger = logging.getLogger(POLICY_LOG)

#: what a live owner reports for a partition it was told to go with
_PROCESSING = {PartitionState.RUNNING, PartitionState.FAILED, PartitionState.STOPPING}
#: what a target reports before it was told to go
_PREPARING = {PartitionState.IDLE, PartitionState.RECOVERING, PartitionState.RECOVERED}


class Adoption:
    """Rebuilds the tracked group from what a restarted coordinator finds."""

    def __init__(
        self,
        group: TrackedGroup,
        handover: Handover,
        roster: Roster,
        standbys: Standbys,
        scaling: Scaling,
        upgrade: RollingUpgrade,
    ) -> None:
        self.group = group
        self.handover = handover
        self.roster = roster
        self.standbys = standbys
        self.scaling = scaling
        self.upgrade = upgrade

    def adopt(
        self,
        partitions: int,
        found: Mapping[str, tuple[Role, ActorReport]],
        alive_nodes: Iterable[str],
        hosts: Iterable[str] | None,
    ) -> list[Action]:
        """Take over what a previous coordinator left (see :meth:`CoordinatorPolicy.adopt`)."""
        g = self.group
        g.partitions = partitions
        g.set_nodes(frozenset(alive_nodes), None if hosts is None else frozenset(hosts))
        self.scaling.configure(g.config)
        actions = self._track(found)
        for name, (_role, report) in found.items():
            if name in g.actors:
                actions += self._adopt_statuses(g.actors[name], report.statuses)
        # the adoption's round is the latest status round: the status shows what the adopted
        # owners reported until the next one (not ``starting`` for partitions that run)
        g.last = {
            (name, st.partition): st
            for name, (_role, report) in found.items()
            if name in g.actors
            for st in report.statuses
        }
        self._orphan_moves()
        actions += self.standbys.drop_outdated()
        orphans = [p for p in range(partitions) if p not in g.owner and p not in g.moves]
        actions += self._replace_owners(orphans)
        actions += self.roster.retire_idle()
        if g.owner:
            g.hold_go = False  # processing had started: recover_ahead is over
        # actors on other code than the record's: an upgrade was under way, it goes on
        g.state = GroupState.UPGRADING if self.upgrade.outdated() else GroupState.RUNNING
        logger.info(
            "group %s: adopted %d partition actors (owners of %s), %d partitions get new owners",
            g.name,
            len(g.workers()),
            sorted(g.owner),
            len(orphans),
        )
        return actions

    def _track(self, found: Mapping[str, tuple[Role, ActorReport]]) -> list[Action]:
        """Track every actor that answered; kill the others (possible writers until gone)."""
        g = self.group
        actions: list[Action] = []
        for name, (role, report) in found.items():
            if report.reach is Reach.ANSWERED:
                code = next((st.code for st in report.statuses if st.code), "")
                g.actors[name] = TrackedActor(name, role, code=code)
                continue
            logger.warning(
                "group %s: %s did not answer after the coordinator restarted (%s); killing it",
                g.name,
                name,
                report.reach.value,
            )
            g.zombies[name] = report.node_id
            g.departed.add(name)
            actions.append(Kill(name))
        return actions

    def _orphan_moves(self) -> None:
        """A kept move whose source is gone is fenced at once, as an orphan's."""
        g = self.group
        for move in g.moves.values():
            if move.phase is MovePhase.RECOVERING:
                move.source = g.owner.get(move.partition)
                if move.source is None:  # its source is gone: fence it as an orphan
                    move.known, move.blockers = False, set(g.zombies)
                    self.handover.fence(move, lease=True)

    def _replace_owners(self, orphans: list[int]) -> list[Action]:
        """Promote the orphans' standbys; then every planned set of partitions that no actor
        holds exactly moves to a new worker (orphans fenced at once, the others handed over),
        so the group is back to the configured actors."""
        g = self.group
        actions: list[Action] = []
        promoted = set()
        for p in orphans:
            if (promotion := self.standbys.promote(p, replacing=None, known=False)) is not None:
                actions += promotion
                promoted.add(p)
        for parts in g.plan():
            if promoted & set(parts) or any(g.holding(w.name) == set(parts) for w in g.workers()):
                continue
            actions += self.roster.spawn_worker(parts, known=False)
        return actions

    def _adopt_statuses(
        self, actor: TrackedActor, statuses: Iterable[PartitionStatus]
    ) -> list[Action]:
        """Adopt what ``actor`` reports where the epoch record agrees; release the rest."""
        g = self.group
        actions: list[Action] = []
        for st in statuses:
            p, state = st.partition, PartitionState(st.state)
            if st.node_id:
                actor.node_id, actor.placed = st.node_id, True
            if actor.role is Role.STANDBY:
                actor.partitions.add(p)
                continue
            record = g.epochs.record(p)
            if state in _PROCESSING and g.epochs.adopt(p, st.epoch, actor.name):
                g.owner[p] = actor.name
            elif state in _PREPARING and st.epoch == record.issued > record.current:
                g.moves[p] = Move(p, actor.name, st.epoch, None)
            elif state in _PREPARING and (st.epoch, actor.name) == (record.current, record.owner):
                move = Move(p, actor.name, st.epoch, None, MovePhase.FENCED, known=False)
                move.lease_until = g.epochs.unknown_lease_end()
                move.blockers = set(g.zombies)
                g.moves[p] = move
            else:
                logger.warning(
                    "group %s: %s holds partition %d under epoch %d (%s), which is not the "
                    "record's (current %d by %s); releasing it",
                    g.name,
                    actor.name,
                    p,
                    st.epoch,
                    state,
                    record.current,
                    record.owner,
                )
                actions.append(Release(actor.name, p))
                continue
            actor.partitions.add(p)
        return actions
