"""Which actor owns which partitions: pure planning, no Ray."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from goka_ray.errors import ConfigError

__all__ = ["Rebalance", "plan_actors", "rebalance"]


def plan_actors(
    partitions: int, *, partitions_per_actor: int = 1, actors: int | None = None
) -> list[list[int]]:
    """Split ``range(partitions)`` into contiguous groups, one per actor.

    ``actors`` (if given) wins over ``partitions_per_actor``; partitions are spread as evenly
    as possible (4 partitions on 3 actors -> [0, 1], [2], [3]).
    """
    if partitions < 1:
        raise ConfigError(f"a group needs at least one partition, got {partitions}")
    if actors is None:
        if partitions_per_actor < 1:
            raise ConfigError(
                f"partitions_per_actor={partitions_per_actor}: use a whole number >= 1"
            )
        actors = -(-partitions // partitions_per_actor)
    if actors < 1:
        raise ConfigError(f"actors={actors}: use a whole number >= 1")
    actors = min(actors, partitions)
    size, extra = divmod(partitions, actors)
    plan, start = [], 0
    for i in range(actors):
        n = size + (1 if i < extra else 0)
        plan.append(list(range(start, start + n)))
        start += n
    return plan


@dataclass(frozen=True)
class Rebalance:
    """The fewest moves that bring a group's workers to a planned count and sizes."""

    #: partition -> the existing worker it moves to
    moves: dict[int, str] = field(default_factory=dict)
    #: partitions for each new worker to create
    new: list[list[int]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.moves or self.new)


def rebalance(
    holdings: Mapping[str, set[int]],
    partitions: int,
    actors: int,
    nodes: Mapping[str, str | None] | None = None,
) -> Rebalance:
    """Move as few partitions as possible so that ``actors`` workers hold the partitions in
    the sizes :func:`plan_actors` gives (e.g. after a failover promoted standbys, or to
    scale a group up or down one actor at a time).

    ``holdings``: worker -> the partitions it owns (or is the target of). The workers that
    hold the most are kept (preferring workers on nodes no other kept worker is on, given
    ``nodes``); each keeps what it holds up to its planned size; the partitions of the other
    workers, and any excess, move to kept workers with room, then to new workers.
    """
    sizes = [len(part) for part in plan_actors(partitions, actors=actors)]
    nodes = nodes or {}
    kept: list[str] = []
    used: set[str | None] = set()
    candidates = set(holdings)
    while candidates and len(kept) < len(sizes):
        best = min(
            candidates,
            key=lambda n: (-len(holdings[n]), nodes.get(n) in used and nodes.get(n) is not None, n),
        )
        candidates.discard(best)
        kept.append(best)
        used.add(nodes.get(best))
    room = {name: sizes[i] for i, name in enumerate(kept)}
    pool: list[int] = []
    for name in holdings:
        held = sorted(holdings[name])
        keep = room.get(name, 0)
        room[name] = keep - min(keep, len(held))
        pool += held[keep:]
    pool.sort()
    moves: dict[int, str] = {}
    for name in kept:
        while room[name] and pool:
            moves[pool.pop(0)] = name
            room[name] -= 1
    new = []
    for size in sizes[len(kept) :]:
        new.append(pool[:size])
        pool = pool[size:]
    return Rebalance(moves, [part for part in new if part])
