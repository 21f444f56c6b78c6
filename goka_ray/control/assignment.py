"""Which actor owns which partitions: pure planning, no Ray."""

from __future__ import annotations

from goka_ray.errors import ConfigError

__all__ = ["plan_actors"]


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
