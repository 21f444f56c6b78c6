"""What the coordinator reports about a group: its status and what placement could not do.

The status shows, per partition, the last status of its owner (or its move's target), or
``pending`` while that actor waits to be placed, with the message counts of all its owners
(:class:`~goka_ray.control.totals.PartitionTotals`). Placement warnings say what the cluster
did not allow (a standby sharing its owner's node, workers not spread) and what to do.

Invariants: reading a status changes nothing in the tracked group; each placement warning is
logged once when it appears (again only after it went away and came back).
"""

from __future__ import annotations

import logging
from dataclasses import replace

from goka_ray.control.placement import short_node
from goka_ray.control.status import GroupStatus, PartitionState, PartitionStatus
from goka_ray.control.tracking import POLICY_LOG, TrackedGroup

__all__ = ["StatusReport"]

logger = logging.getLogger(POLICY_LOG)


class StatusReport:
    """Builds a group's :class:`~goka_ray.control.status.GroupStatus` and its warnings."""

    def __init__(self, group: TrackedGroup) -> None:
        self.group = group
        #: placement warnings already logged
        self._warned: set[str] = set()

    def status(self, waiting: str | None = None) -> GroupStatus:
        """The group as last observed (see :meth:`CoordinatorPolicy.status`)."""
        g = self.group
        parts = [self._partition(p) for p in range(g.partitions)]
        error = None if g.error is None else f"{type(g.error).__name__}: {g.error}"
        workers = len(g.workers())
        return GroupStatus(
            g.name,
            g.state,
            parts,
            error,
            actors=workers,
            warnings=self.placement_warnings(),
            autoscaling=None if g.autoscaler is None else g.autoscaler.summary(workers),
            scaling=list(g.decisions),
            code=g.code,
            waiting=waiting if g.pending() else None,
        )

    def _partition(self, p: int) -> PartitionStatus:
        """Partition ``p`` as its holder last reported it, with its standbys and the
        counts of all its owners."""
        g = self.group
        holder = g.holder(p)
        st = g.last.get((holder, p)) if holder is not None else None
        if st is None:
            tracked = g.actors.get(holder or "")
            state = PartitionState.PENDING if tracked and tracked.pending else None
            st = PartitionStatus(
                partition=p,
                state=state or PartitionState.STARTING,
                actor_name=holder,
                code=tracked.code if tracked else "",
            )
        standbys = g.standbys_of(p)
        total = g.totals.total(p)
        return replace(
            st,
            restarts=g.restarts.get(p, 0),
            standbys=len(standbys),
            standby_nodes=[s.node_id for s in standbys if s.placed and s.node_id],
            stats=st.stats.copy(
                processed=total.processed,
                skipped=total.skipped,
                dead_lettered=total.dead_lettered,
            ),
        )

    def placement_warnings(self) -> list[str]:
        """What placement could not do on this cluster, each saying what to do about it."""
        g = self.group
        hosts = len(g.host_nodes())
        warnings = []
        for p in range(g.partitions):
            holder = g.actors.get(g.holder(p) or "")
            if holder is None or not holder.placed:
                continue
            for standby in g.standbys_of(p):
                if standby.placed and standby.node_id == holder.node_id:
                    warnings.append(
                        f"partition {p}: its standby shares node {short_node(holder.node_id)} "
                        f"with its owner ({hosts} node(s) can host the group's actors, or the "
                        "others had no room); add a node so that it survives the loss of its "
                        "owner's node"
                    )
        placed = [w.node_id for w in g.workers() if w.placed and w.node_id]
        settled = len(g.workers()) == len(g.plan()) and not g.moves
        if g.config.placement == "spread" and hosts and placed and settled:
            spread_over = len(set(placed))
            if spread_over < min(len(placed), hosts):
                warnings.append(
                    f"placement spread: {len(placed)} actors on {spread_over} of {hosts} nodes "
                    f"(the others had no room for num_cpus={g.config.num_cpus}); free or "
                    "add resources there"
                )
        return warnings

    def log_warnings(self) -> None:
        """Log each placement warning once, when it appears."""
        current = set(self.placement_warnings())
        for warning in sorted(current - self._warned):
            logger.warning("group %s: %s", self.group.name, warning)
        self._warned = current
