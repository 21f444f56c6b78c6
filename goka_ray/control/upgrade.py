"""The rolling upgrade: a group moved to new code one worker at a time, without a gap.

An upgrade records the new code's fingerprint as the group's, replaces the standbys running
other code at once (a promoted standby processes with its own code), then, whenever no move
is under way, hands the next outdated worker's partitions over to a new worker near it (the
new worker recovers them, the old one releases them, the new one processes: the hand-over of
:mod:`goka_ray.control.handover`). The upgrade is done when no worker holding partitions runs
other code.

Invariants:
- Every actor spawned after an upgrade started runs the group's new code.
- An upgrade step starts only when no move is under way: an upgrade asked for during a scale
  (the user's or the autoscaler's) starts once its moves are done; one worker at a time.
- A newer code asked for during an upgrade replaces the one being rolled out.
- Only the upgrade ends ``UPGRADING`` (a scale is refused while it runs).
"""

from __future__ import annotations

import logging

from goka_ray.control.actions import Action, ActorResources
from goka_ray.control.roster import Roster
from goka_ray.control.standbys import Standbys
from goka_ray.control.status import GroupState
from goka_ray.control.tracking import POLICY_LOG, TrackedActor, TrackedGroup
from goka_ray.errors import GokaRayError

__all__ = ["RollingUpgrade"]

logger = logging.getLogger(POLICY_LOG)


class RollingUpgrade:
    """Starts an upgrade and takes its steps, one outdated worker at a time."""

    def __init__(self, group: TrackedGroup, roster: Roster, standbys: Standbys) -> None:
        self.group = group
        self.roster = roster
        self.standbys = standbys

    @property
    def upgrading(self) -> bool:
        return self.group.state is GroupState.UPGRADING

    def upgrade(self, code: str) -> list[Action] | None:
        """Move the group to the code whose fingerprint is ``code`` (see
        :meth:`CoordinatorPolicy.upgrade`); None when every actor runs it already."""
        g = self.group
        if g.state not in (GroupState.RUNNING, GroupState.SCALING, GroupState.UPGRADING):
            raise GokaRayError(f"group {g.name} is {g.state}; upgrade it when it is running")
        g.code = code
        if not self.outdated() and not self.upgrading:
            return None
        logger.info("group %s: upgrading to code %s", g.name, code)
        g.state = GroupState.UPGRADING
        actions = self.standbys.drop_outdated()  # Standbys.ensure places new ones
        return actions + self.step()

    def outdated(self) -> list[TrackedActor]:
        """Workers holding partitions that run other code than the group's."""
        g = self.group
        return [w for w in g.workers() if w.code != g.code and g.holding(w.name)]

    def step(self) -> list[Action]:
        """Once no move is under way, hand the next outdated worker's partitions over to a
        new worker (near it); the upgrade is done when none is left."""
        g = self.group
        if not self.upgrading or g.moves:
            return []
        outdated = self.outdated()
        if not outdated:
            logger.info("group %s: every partition runs code %s", g.name, g.code)
            g.state = GroupState.RUNNING
            return []
        old = outdated[0]
        partitions = sorted(g.holding(old.name))
        logger.info("group %s: upgrading %s (partitions %s)", g.name, old.name, partitions)
        return self.roster.spawn_worker(partitions, near=old.node_id)

    def demand(self) -> list[ActorResources]:
        """What one step of an upgrade starts: one worker (the old one retires after it)."""
        return [ActorResources(self.group.config.num_cpus, self.group.config.memory)]
