"""The roster of a group's actors: which exist, and how they come and go.

A new worker is created for a set of partitions that move to it (on the node placement
chooses, see :mod:`goka_ray.control.placement`); an actor leaves by being retired (idle
workers, a stop: it commits and closes first) or killed (dead, hung, stale, untracked, or a
standby no longer needed).

Invariants:
- Every actor that leaves ``actors`` is recorded in ``departed`` (not swept again while Ray
  still lists it); a killed one is in ``zombies`` until Ray confirms its process gone, and
  counts as a possible writer until then.
- The epochs of a new worker's partitions are issued (recorded) before anything changes.
- Every actor of the group that the policy does not track is killed; idle workers are
  retired, so the actor count returns to the planned one.
- Killed actors no move waits for are forgotten (no longer asked about).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from goka_ray.control.actions import Action, Kill, Retire, Role, Spawn
from goka_ray.control.handover import Handover
from goka_ray.control.names import worker_prefix
from goka_ray.control.placement import worker_node
from goka_ray.control.tracking import POLICY_LOG, TrackedActor, TrackedGroup

__all__ = ["Roster"]

logger = logging.getLogger(POLICY_LOG)


class Roster:
    """Creates, retires and kills the group's actors (the only code that removes them)."""

    def __init__(self, group: TrackedGroup, handover: Handover) -> None:
        self.group = group
        self.handover = handover

    def spawn_worker(
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
        g = self.group
        epochs = [g.epochs.issue(p) for p in partitions]  # recorded before anything changes
        name = f"{worker_prefix(g.name)}{g.new_id()[:8]}"
        node = worker_node(
            g.host_nodes(), g.load(), spread=g.config.placement == "spread", near=near
        )
        g.actors[name] = TrackedActor(
            name, Role.WORKER, set(partitions), node_id=node, wanted_node=node, code=g.code
        )
        actions: list[Action] = [Spawn(name, Role.WORKER, g.resources(node))]
        for p, epoch in zip(partitions, epochs, strict=True):
            orphan = replacing is not None or (not known and p not in g.owner and p not in g.moves)
            actions += self.handover.start(
                p,
                name,
                source=None if orphan else g.owner.get(p),
                epoch=epoch,
                blockers=g.suspects(replacing) if orphan else (),
                known=known or not orphan,
            )
            if orphan:
                self.handover.fence_now(p)
        return actions

    def kill(self, actor: TrackedActor) -> list[Action]:
        """Stop tracking ``actor`` and kill it; its process counts until Ray confirms it gone."""
        g = self.group
        del g.actors[actor.name]
        g.zombies[actor.name] = actor.node_id
        g.departed.add(actor.name)
        return [Kill(actor.name)]

    def retire_idle(self) -> list[Action]:
        """Retire the workers that hold no partition any more."""
        g = self.group
        idle = [a.name for a in g.workers() if not a.partitions]
        for name in idle:
            del g.actors[name]
            g.departed.add(name)
        return [Retire(tuple(idle))] if idle else []

    def retired(self, actors: Iterable[str], confirmed: bool) -> None:
        """Outcome of a Retire: ``confirmed`` if every actor said it stopped (committed and
        closed). Their partitions then have no owner that could still write."""
        if not confirmed:
            return
        names = set(actors)
        for p in range(self.group.partitions):
            if self.group.epochs.owner(p) in names:
                self.group.epochs.release(p)

    def remove_all(self) -> list[Action]:
        """Kill every standby and retire every worker (a stop, or the group failed)."""
        g = self.group
        actions: list[Action] = [Kill(a.name) for a in g.standbys()]
        workers = tuple(a.name for a in g.workers())
        if workers:
            actions.append(Retire(workers))
        g.departed |= set(g.actors)
        g.actors.clear()
        return actions

    def sweep(self, named: frozenset[str]) -> list[Action]:
        """Kill actors of the group that nobody tracks (left by an earlier coordinator)."""
        g = self.group
        g.departed &= named  # gone from Ray's list: nothing left to skip
        actions: list[Action] = []
        for name in sorted(named - set(g.actors) - set(g.zombies) - g.departed):
            logger.warning("group %s: killing %s, an actor it does not track", g.name, name)
            g.departed.add(name)
            actions.append(Kill(name))
        return actions

    def forget_zombies(self) -> None:
        """Stop asking about killed actors that no move waits for."""
        g = self.group
        waited = set().union(*(m.blockers for m in g.moves.values())) if g.moves else set()
        for name in set(g.zombies) - waited:
            del g.zombies[name]
