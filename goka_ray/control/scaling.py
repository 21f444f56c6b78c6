"""Scaling: the group's actor count and sizes, changed live (a scale, the autoscaler, a resize).

A scale to a changed config starts a new worker for every planned set of partitions and moves
them all at once through the hand-over. Once no partition moves, the workers are brought back
to the planned count and sizes with the fewest live moves (:func:`~goka_ray.control.
assignment.rebalance`): after a failover promoted standbys (once the group ran settled for
RESIZE_SETTLE seconds), or at once when the autoscaler (:mod:`goka_ray.control.autoscaling`)
chose a new count. What a start or a scale would ask of Ray is computed here too, changing
nothing, for admission (:mod:`goka_ray.control.admission`).

Invariants:
- The autoscaler is fed only samples of a settled group (every partition runs under its
  owner, nothing moves, no Go is held back) whose runners all reported their lag; any other
  round starts its delays again.
- A scale is refused unless the group is running or scaling (never during an upgrade; the
  autoscaler waits for it, since the group is not settled while it runs).
- ``target_actors`` and the autoscaler are written only here.
"""

from __future__ import annotations

import logging

from goka_ray.control.actions import Action, ActorResources
from goka_ray.control.assignment import plan_actors, rebalance
from goka_ray.control.autoscaling import Autoscaler, LagSample
from goka_ray.control.handover import Handover
from goka_ray.control.roster import Roster
from goka_ray.control.status import GroupState, PartitionState, ScalingDecision
from goka_ray.control.tracking import POLICY_LOG, TrackedGroup
from goka_ray.core.config import GroupConfig
from goka_ray.errors import GokaRayError

__all__ = ["RESIZE_SETTLE", "Scaling"]

logger = logging.getLogger(POLICY_LOG)

#: seconds a group runs with every partition processing before its actor count is brought
#: back to the planned one (e.g. after a failover promoted standbys): a partition that just
#: failed over is not moved again at once, and a string of failures is not chased
RESIZE_SETTLE = 5.0


class Scaling:
    """Applies scales, runs the autoscaler and resizes a settled group."""

    def __init__(self, group: TrackedGroup, handover: Handover, roster: Roster) -> None:
        self.group = group
        self.handover = handover
        self.roster = roster
        #: since when every partition processes and nothing moves (None: not now)
        self.settled_since: float | None = None

    def configure(self, config: GroupConfig, actors: int | None = None) -> None:
        """Start, change or end autoscaling as ``config`` says; ``actors``: a count asked for."""
        g = self.group
        if config.autoscaling is None:
            g.autoscaler, g.target_actors = None, None
            return
        g.autoscaler = Autoscaler(config.autoscaling, g.partitions)
        start = actors or g.target_actors or config.actors or config.autoscaling.min_actors
        g.target_actors = g.autoscaler.clamp(start)

    def scale(self, config: GroupConfig) -> list[Action] | None:
        """Apply a changed config live (see :meth:`CoordinatorPolicy.scale`)."""
        g = self.group
        if g.state not in (GroupState.RUNNING, GroupState.SCALING):
            hint = "; wait until the upgrade is done" if g.state is GroupState.UPGRADING else ""
            raise GokaRayError(f"group {g.name} is {g.state}; cannot scale it{hint}")
        demand = self.scale_demand(config)
        old, g.config = g.config, config
        if config.autoscaling != old.autoscaling or config.actors != old.actors:
            self.configure(config, config.actors)
        if not demand:
            return None
        plan = g.plan()
        g.state = GroupState.SCALING
        actions: list[Action] = []
        for parts in plan:
            actions += self.roster.spawn_worker(parts)
        return actions

    # -- what the commands would ask of Ray ---------------------------------------------------

    def start_demand(self, partitions: int) -> list[ActorResources]:
        """The actors a start places: every planned worker (as many as the autoscaler starts
        with, where it scales the group) and every standby."""
        cfg = self.group.config
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
        g = self.group
        old = g.config
        fresh = config.autoscaling != old.autoscaling or config.actors != old.actors
        plan = plan_actors(
            g.partitions,
            partitions_per_actor=config.partitions_per_actor,
            actors=self._actors_for(config, g.partitions, fresh=fresh),
        )
        current = sorted(sorted(a.partitions) for a in g.workers())
        resources = (config.num_cpus, config.memory, config.placement)
        if plan == current and resources == (old.num_cpus, old.memory, old.placement):
            return []
        return [ActorResources(config.num_cpus, config.memory)] * len(plan)

    def _actors_for(self, config: GroupConfig, partitions: int, *, fresh: bool) -> int | None:
        """The actor count ``config`` plans (None: by ``partitions_per_actor``), changing
        nothing: with ``autoscaling``, the count the autoscaler keeps, or (``fresh``: its
        settings or ``actors`` change) starts from, as :meth:`configure` sets it."""
        if config.autoscaling is None:
            return config.actors
        target = self.group.target_actors
        if not fresh and target is not None:
            return target
        start = config.actors or target or config.autoscaling.min_actors
        return Autoscaler(config.autoscaling, partitions).clamp(start)

    # -- the actor count of a settled group ---------------------------------------------------

    def settled(self) -> bool:
        """Every partition runs under its owner and nothing moves."""
        g = self.group
        if g.state is not GroupState.RUNNING or g.moves or g.hold_go:
            return False
        for p in range(g.partitions):
            owner = g.owner.get(p)
            st = g.last.get((owner, p)) if owner is not None else None
            if st is None or PartitionState(st.state) is not PartitionState.RUNNING:
                return False
        return True

    def autoscale(self) -> bool:
        """Feed the autoscaler a sample of a settled group; adopt the count it decides.
        True if it decided a new count."""
        g = self.group
        if g.autoscaler is None:
            return False
        if not self.settled():
            g.autoscaler.restart()
            return False
        owned = [g.last[(g.owner[p], p)] for p in range(g.partitions)]
        if not all(st.offsets and st.lag for st in owned):
            return False  # a runner that has not fetched yet: its lag is not known
        workers = len(g.workers())
        decision = g.autoscaler.observe(
            LagSample(
                at=g.clock(),
                actors=workers,
                lag=sum(sum(st.lag.values()) for st in owned),
                position=sum(sum(st.offsets.values()) for st in owned),
            )
        )
        if decision is None or decision.actors == g.target_actors:
            return False
        g.decisions.append(ScalingDecision(g.wall(), workers, decision.actors, decision.reason))
        logger.info(
            "group %s: autoscaling %d -> %d actors: %s",
            g.name,
            workers,
            decision.actors,
            decision.reason,
        )
        g.target_actors = decision.actors
        g.autoscaler.restart()
        return True

    def resize(self, *, at_once: bool = False) -> list[Action]:
        """Bring a group settled for RESIZE_SETTLE seconds (``at_once``: the autoscaler just
        chose a new count) to the planned actor count and sizes with the fewest live moves
        (after a failover promoted standbys, or for a new autoscaled count)."""
        g = self.group
        if not self.settled():
            self.settled_since = None
            return []
        now = g.clock()
        if self.settled_since is None:
            self.settled_since = now
        if not at_once and now - self.settled_since < RESIZE_SETTLE:
            return []
        workers = g.workers()
        plan = rebalance(
            {w.name: set(w.partitions) for w in workers},
            g.partitions,
            len(g.plan()),
            {w.name: w.node_id for w in workers},
        )
        if not plan:
            return []
        logger.info(
            "group %s: %d actors -> %d (moving partitions %s)",
            g.name,
            len(workers),
            len(g.plan()),
            sorted([*plan.moves, *(p for part in plan.new for p in part)]),
        )
        g.state = GroupState.SCALING
        actions: list[Action] = []
        for p, target in sorted(plan.moves.items()):
            g.actors[target].partitions.add(p)
            actions += self.handover.start(p, target, source=g.owner.get(p))
        for parts in plan.new:
            actions += self.roster.spawn_worker(parts)
        return actions
