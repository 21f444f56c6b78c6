"""Standbys: passive copies of a partition kept current from its changelog, ready to take over.

A group with ``standby_replicas: n`` keeps ``n`` standbys per partition. A standby is placed
only once its partition's owner reports its node, on another node than the owner and the
partition's other standbys (see :func:`~goka_ray.control.placement.standby_node`), and moved
when the owner comes onto its node. When an owner dies, its partition is promoted to the
standby that answered last: the standby becomes a worker and the partition moves to it.

Invariants:
- A standby runs the group's code: one running other code is killed (promoted, it would
  process with that code) and a new one follows.
- A standby on a lost node is never promoted; a standby follows exactly one partition.
- Standbys are created only here, killed only through the roster.
"""

from __future__ import annotations

import logging

from goka_ray.control.actions import Action, Follow, Role, Spawn
from goka_ray.control.handover import Handover
from goka_ray.control.names import standby_prefix
from goka_ray.control.placement import short_node, standby_node
from goka_ray.control.roster import Roster
from goka_ray.control.tracking import POLICY_LOG, TrackedActor, TrackedGroup

__all__ = ["Standbys"]

logger = logging.getLogger(POLICY_LOG)


class Standbys:
    """Places, moves, replaces and promotes the standbys of one group."""

    def __init__(self, group: TrackedGroup, handover: Handover, roster: Roster) -> None:
        self.group = group
        self.handover = handover
        self.roster = roster

    def ensure(self) -> list[Action]:
        """Keep ``standby_replicas`` standbys per partition, each on another node than the
        partition's owner where the cluster has one (see the module docstring)."""
        g = self.group
        actions: list[Action] = []
        if not g.config.standby_replicas:
            return actions
        for p in range(g.partitions):
            holder = g.actors.get(g.holder(p) or "")
            if holder is None or not holder.placed or holder.node_id is None:
                continue  # placed now, it could land on the owner's node once that is known
            have = g.standbys_of(p)
            actions += self._move_off(p, holder.node_id, have)
            actions += self._add(p, holder.node_id, have)
        return actions

    def _move_off(self, partition: int, owner_node: str, have: list[TrackedActor]) -> list[Action]:
        """Kill the standbys (removed from ``have``) that the owner came onto the node of,
        where another node could take them."""
        g = self.group
        actions: list[Action] = []
        for standby in list(have):
            # placed where it was wanted, and the owner came onto its node since: move it
            if not (standby.placed and standby.node_id == owner_node == standby.wanted_node):
                continue
            taken = {s.node_id for s in have if s is not standby and s.node_id}
            if standby_node(g.host_nodes(), g.load(), owner_node, taken).shares_owner_node:
                continue
            logger.info(
                "group %s: partition %d's owner moved onto node %s of its standby %s; "
                "moving the standby",
                g.name,
                partition,
                short_node(owner_node),
                standby.name,
            )
            actions += self.roster.kill(standby)
            have.remove(standby)
        return actions

    def _add(self, partition: int, owner_node: str, have: list[TrackedActor]) -> list[Action]:
        """Spawn standbys of ``partition`` (added to ``have``) until it has enough."""
        g = self.group
        actions: list[Action] = []
        while len(have) < g.config.standby_replicas:
            taken = {s.node_id for s in have if s.node_id}
            place = standby_node(g.host_nodes(), g.load(), owner_node, taken)
            name = f"{standby_prefix(g.name)}p{partition}-{g.new_id()[:6]}"
            standby = TrackedActor(
                name,
                Role.STANDBY,
                {partition},
                node_id=place.node,
                wanted_node=place.node,
                code=g.code,
            )
            g.actors[name] = standby
            have.append(standby)
            actions += [Spawn(name, Role.STANDBY, g.resources(place.node)), Follow(name, partition)]
        return actions

    def drop_outdated(self) -> list[Action]:
        """Kill the standbys that run other code than the group's (new ones follow)."""
        actions: list[Action] = []
        for standby in self.group.standbys():
            if standby.code != self.group.code:
                actions += self.roster.kill(standby)
        return actions

    def promote(self, partition: int, *, replacing: str | None, known: bool) -> list[Action] | None:
        """Move ``partition`` to its standby that answered last and is not on a lost node
        (the oldest of them); None if it has none."""
        g = self.group
        candidates = [s for s in g.standbys_of(partition) if not g.on_lost_node(s)]
        if not candidates:
            return None
        standby = min(candidates, key=lambda s: s.misses)
        actions = self.handover.start(
            partition,
            standby.name,
            source=None,
            blockers=g.suspects(replacing),
            known=known,
        )
        standby.role = Role.WORKER
        self.handover.fence_now(partition)
        logger.warning(
            "group %s: partition %d fails over to its standby %s",
            g.name,
            partition,
            standby.name,
        )
        return actions
