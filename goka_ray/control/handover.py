"""The hand-over of a partition to a new owner: a :class:`Move` and the steps that drive it.

A partition changes owner only through a move:
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

Invariants:
- At most one move per partition; a move still under way to another target is called off
  when a new one starts (that target never went, so it never wrote) and what it waited for
  carries over.
- An ``Assign`` carries an epoch that was recorded as issued before the action was returned;
  an epoch becomes current (``FENCED``) only through :meth:`Handover.fence`, recorded first.
- ``Go`` is returned only for the partition's current epoch, to the actor that holds it, after
  it reported ``recovered`` under that epoch, and only under the conditions of step 4.
- A new owner waits for an older owner's lease only as long as the epoch table knows it can
  be valid (see :mod:`goka_ray.control.fencing`), not a full lease from when a loss was seen.
- ``owner`` changes here only when a target accepted its ``Go``.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from goka_ray.control.actions import Action, Assign, Go, Release
from goka_ray.control.status import PartitionState, PartitionStatus
from goka_ray.control.tracking import POLICY_LOG, TrackedGroup

__all__ = ["UNCONFIRMED_GRACE", "Handover", "Move", "MovePhase"]

logger = logging.getLogger(POLICY_LOG)

#: seconds past a lease that a new owner waits for Ray to confirm that a killed older owner on
#: a live node is gone, before it goes anyway (Ray ends a killed process within seconds)
UNCONFIRMED_GRACE = 30.0


class MovePhase(enum.Enum):
    """Where a move of a partition to a new owner stands (see the module docstring)."""

    #: the target recovers under an issued epoch; the source, if any, still owns and writes
    RECOVERING = "recovering"
    #: the move's epoch is current; the target goes once recovered and no older owner can write
    FENCED = "fenced"


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


class Handover:
    """Starts, fences and completes the moves of one group's partitions (the only writer of
    ``moves``, and of ``owner`` when a move completes)."""

    def __init__(self, group: TrackedGroup) -> None:
        self.group = group

    def start(
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
        g = self.group
        if epoch is None:
            epoch = g.epochs.issue(partition)
        move = Move(partition, target, epoch, source, known=known)
        move.blockers = {b for b in blockers if b in g.zombies}
        actions: list[Action] = []
        old = g.moves.get(partition)
        if old is not None:
            if old.target != target and (previous := g.actors.get(old.target)) is not None:
                previous.partitions.discard(partition)
                actions.append(Release(old.target, partition))
            if old.phase is MovePhase.FENCED:
                move.inherit(old)
        g.moves[partition] = move
        if old is not None and old.phase is MovePhase.FENCED:
            self.fence(move, lease=True)
        return [*actions, Assign(target, partition, epoch)]

    def fence(self, move: Move, *, lease: bool) -> None:
        """Make the move's epoch current (recorded first): older leases can no longer renew.

        ``lease``: an older owner may hold a lease that is still valid, so the new owner waits
        until the last lease the epoch table granted on an older epoch ends (a full lease from
        now where it cannot know, after a restart), unless the move's ``known`` blockers are
        all confirmed gone. False: the older owner confirmed it stopped. Nothing is waited for
        if no older epoch ever had a live owner. A move fenced already is left as it is.
        """
        if move.phase is MovePhase.FENCED:
            return
        g = self.group
        p = move.partition
        previous = g.epochs.owner(p)
        had_owner = previous is not None
        if had_owner and previous not in g.actors and previous not in move.blockers:
            move.known = False  # an owner this coordinator never tracked (a restart)
        g.epochs.make_current(p, move.epoch, move.target)
        move.phase = MovePhase.FENCED
        move.fenced_at = g.clock()
        if not had_owner:
            move.blockers.clear()  # no epoch of it had a live owner: nobody can write
            move.lease_until = None
            move.known = True
            return
        ends = g.epochs.superseded_lease_end(p) if lease else None
        if ends is not None:
            move.lease_until = max(move.lease_until or ends, ends)

    def fence_now(self, partition: int) -> None:
        """Fence the move of ``partition`` at once: its older owner is dead, failed or unknown,
        so its lease runs out while the target recovers."""
        self.fence(self.group.moves[partition], lease=True)

    def holds(self, name: str, partition: int, st: PartitionStatus) -> bool:
        """Whether ``st`` is about what ``name`` holds now (not an older assignment)."""
        move = self.group.moves.get(partition)
        if move is not None and move.target == name:
            return st.epoch == move.epoch
        return self.group.owner.get(partition) == name

    def recovered(self, move: Move) -> bool:
        """Whether the target reported ``recovered`` under the move's epoch last round."""
        st = self.group.last.get((move.target, move.partition))
        return (
            st is not None
            and PartitionState(st.state) is PartitionState.RECOVERED
            and st.epoch == move.epoch
        )

    def advance(self) -> list[Action]:
        """Step every move whose target recovered: ask its source to release, or fence it,
        and let it go once usable (none while ``recover_ahead`` holds every Go back)."""
        g = self.group
        if g.hold_go:
            if sum(self.recovered(m) for m in g.moves.values()) < g.partitions:
                return []
            logger.info("group %s: every partition recovered; processing starts", g.name)
            g.hold_go = False
        actions: list[Action] = []
        for move in list(g.moves.values()):
            if not self.recovered(move):
                continue
            if move.phase is MovePhase.RECOVERING:
                if move.source is not None:
                    actions.append(Release(move.source, move.partition))
                    continue  # the epoch becomes current on the outcome (released)
                self.fence(move, lease=True)
            actions += self.go_if_usable(move)
        return actions

    def go_if_usable(self, move: Move) -> list[Action]:
        if move.phase is not MovePhase.FENCED or move.target not in self.group.actors:
            return []
        if not self.recovered(move):
            return []
        if not move.usable(self.group.clock(), self.group.zombies, self.group.alive_nodes):
            return []
        return [Go(move.target, move.partition, move.epoch)]

    def released(
        self, actor: str, partition: int, stopped: bool, final: PartitionStatus | None
    ) -> list[Action]:
        """Outcome of a Release (see :meth:`CoordinatorPolicy.released`): the move's epoch
        becomes current; its target goes if nothing else is waited for."""
        g = self.group
        if final is not None:
            g.totals.observe(actor, final)
        tracked = g.actors.get(actor)
        if tracked is not None:
            tracked.partitions.discard(partition)
        move = g.moves.get(partition)
        if move is None or move.source != actor:
            return []
        move.source = None
        if not stopped:
            logger.warning(
                "group %s: %s did not confirm it released partition %d; waiting out its lease",
                g.name,
                actor,
                partition,
            )
            move.known = False  # its end is not confirmed: its lease must run out
        self.fence(move, lease=not stopped)
        return self.go_if_usable(move)

    def went(self, actor: str, partition: int, epoch: int, accepted: bool) -> None:
        """Outcome of a Go: the target accepted (it processes ``partition`` under ``epoch``)."""
        g = self.group
        move = g.moves.get(partition)
        if not accepted or move is None or (move.target, move.epoch) != (actor, epoch):
            return
        g.owner[partition] = actor
        del g.moves[partition]
        logger.info(
            "group %s: partition %d processes on %s under epoch %d",
            g.name,
            partition,
            actor,
            epoch,
        )
        g.totals.settle(partition, (actor, epoch))
