"""Placement: which node a group's next partition actor should go to (pure, no Ray).

The coordinator's policy chooses a node for every actor it creates and Ray places the actor
there (a soft node affinity that spills to another node when the chosen one has no room), so
placement follows one rule that is unit-tested without a cluster:

- ``placement: spread`` puts a worker on the node that holds the fewest workers of the group
  (then the fewest of its actors of any kind), so the group's workers are on different nodes
  as far as the cluster allows; a replacement goes back to the node of the actor it replaces
  while that node is alive (its local copy is there). ``pack`` leaves workers to Ray's default
  scheduling (it fills a node before it uses the next one).
- A standby (``standby_replicas``) goes on a node other than its partition's owner and other
  than the partition's other standbys: it must survive the loss of the owner's node. It is
  placed only once the owner's node is known, and moved when the owner moves onto its node.
  Where the cluster has too few nodes for that, it shares a node and the group says so.

Invariants: only nodes in ``hosts`` (alive, able to host an actor of the group) are chosen;
the choice is deterministic (ties go to the smallest node id); nothing here changes state.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

__all__ = ["NodeLoad", "StandbyPlace", "short_node", "standby_node", "worker_node"]


def short_node(node: str | None) -> str:
    """A node id as status tables show it (its first 8 hex digits)."""
    return (node or "-")[:8]


@dataclass(frozen=True)
class NodeLoad:
    """How many of the group's actors each node holds (actors still being placed count on
    the node chosen for them)."""

    workers: Mapping[str, int]
    actors: Mapping[str, int]

    @classmethod
    def count(cls, placed: Iterable[tuple[str | None, bool]]) -> NodeLoad:
        """From (node, is_worker) of every tracked actor."""
        workers: dict[str, int] = {}
        actors: dict[str, int] = {}
        for node, is_worker in placed:
            if node is None:
                continue
            actors[node] = actors.get(node, 0) + 1
            if is_worker:
                workers[node] = workers.get(node, 0) + 1
        return cls(workers, actors)


def worker_node(
    hosts: Collection[str], load: NodeLoad, *, spread: bool, near: str | None = None
) -> str | None:
    """The node for a new worker: ``near`` (a replaced actor's node, where its local copy
    is) while it can host one; else, with ``spread``, the host with the fewest workers of
    the group, then the fewest actors; else None (Ray's default scheduling)."""
    if near is not None and near in hosts:
        return near
    if not spread or not hosts:
        return None
    return min(hosts, key=lambda n: (load.workers.get(n, 0), load.actors.get(n, 0), n))


@dataclass(frozen=True)
class StandbyPlace:
    """Where a standby goes, and whether it must share its owner's node."""

    node: str | None
    #: True when no other host than the owner's node is alive: it shares the owner's node
    shares_owner_node: bool


def standby_node(
    hosts: Collection[str], load: NodeLoad, owner_node: str, taken: Collection[str] = ()
) -> StandbyPlace:
    """The node for a standby of a partition whose owner runs on ``owner_node``: the least
    loaded host that holds neither the owner nor another standby of the partition (``taken``);
    failing that one that at least is not the owner's; failing that the owner's own node."""

    def least(nodes: Iterable[str]) -> str | None:
        return min(nodes, key=lambda n: (load.actors.get(n, 0), n), default=None)

    others = [n for n in hosts if n != owner_node]
    node = least(n for n in others if n not in taken) or least(others)
    if node is not None:
        return StandbyPlace(node, False)
    return StandbyPlace(owner_node, True)
