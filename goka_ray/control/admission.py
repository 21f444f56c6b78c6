"""Admission: do the actors a group is about to start fit what the Ray cluster has free?

Ray places an actor only on a node that has every resource it asks for free (resources are
logical: ``num_cpus=0.25`` reserves a quarter of a CPU whether it is used or not). An actor
that fits nowhere waits in ``PENDING_CREATION`` until something frees enough, for ever if no
node is big enough. Waiting for placement is not hanging: the coordinator never counts it as
a restart (see :class:`~goka_ray.control.actions.Reach`), but a group that cannot be placed
must say so at once, naming what is missing.

The coordinator asks :func:`shortfall` before it starts actors: at a start (every worker and
standby), at a live scale (every new worker: they all start before the old ones hand over)
and at each step of an upgrade (one worker). The actors are placed greedily, each on the node
with the most free CPU that holds all it asks, as Ray does with actors of one size; what does
not fit is reported with the resource, the amount asked and the amount free, and
:func:`explain` says what to do. No Ray here: the shell reads the nodes' resources.

Invariants: pure functions of their arguments; amounts are Ray's units (CPUs, bytes).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from goka_ray.control.actions import ActorResources

__all__ = [
    "NodeCapacity",
    "Shortfall",
    "explain",
    "explain_pending",
    "explain_view",
    "shortfall",
    "wait_for_fit",
]

#: the resources goka-ray asks Ray for (``num_cpus``, ``memory``), in the order reported
RESOURCES = ("CPU", "memory")
#: Ray keeps resources with 4 decimals; amounts this close count as equal
_EPSILON = 1e-6


@dataclass(frozen=True)
class NodeCapacity:
    """One live node's resources, as Ray reports them (``{"CPU": 2.0, "memory": ...}``)."""

    node_id: str
    total: Mapping[str, float]
    free: Mapping[str, float]


@dataclass(frozen=True)
class Shortfall:
    """What does not fit: of ``actors`` asking ``each`` of ``resource``, only ``placeable``
    fit on what is free now."""

    resource: str
    actors: int
    placeable: int
    each: float
    #: free in the whole cluster, and on the node with the most free
    free: float
    largest_free: float
    #: the cluster's total, and the biggest node's total
    total: float
    largest_total: float
    #: whether the actors would fit if nothing else held resources
    fits_empty_cluster: bool
    #: the largest ``num_cpus`` with which every actor would fit now (None: none would)
    suggested_num_cpus: float | None = None


def asked(resources: ActorResources) -> dict[str, float]:
    """What one actor asks Ray for, by resource name."""
    return {"CPU": float(resources.num_cpus), "memory": float(resources.memory or 0)}


def shortfall(demand: Sequence[ActorResources], nodes: Sequence[NodeCapacity]) -> Shortfall | None:
    """None if every actor of ``demand`` fits on the nodes' free resources, else what is short."""
    if not demand:
        return None
    asks = sorted((asked(r) for r in demand), key=lambda a: -a["CPU"])
    placeable = _place(asks, [dict(n.free) for n in nodes])
    if placeable == len(asks):
        return None
    resource = _blocking(asks, nodes)
    amount = [a[resource] for a in asks]
    free = [n.free.get(resource, 0.0) for n in nodes]
    total = [n.total.get(resource, 0.0) for n in nodes]
    return Shortfall(
        resource=resource,
        actors=len(asks),
        placeable=placeable,
        each=max(amount),
        free=sum(free),
        largest_free=max(free, default=0.0),
        total=sum(total),
        largest_total=max(total, default=0.0),
        fits_empty_cluster=_place(asks, [dict(n.total) for n in nodes]) == len(asks),
        suggested_num_cpus=_suggest_cpus(asks, nodes) if resource == "CPU" else None,
    )


def wait_for_fit(
    demand: Sequence[ActorResources],
    capacity: Callable[[], Sequence[NodeCapacity]],
    grace: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
    interval: float = 0.5,
) -> Shortfall | None:
    """None once ``demand`` fits what ``capacity()`` reports free; else the shortfall, at once
    if it would not fit even an empty cluster, or after ``grace`` seconds (resources of actors
    killed a moment ago are freed within about a second)."""
    deadline = clock() + grace
    while True:
        short = shortfall(demand, capacity())
        if short is None or not short.fits_empty_cluster or clock() >= deadline:
            return short
        sleep(interval)


def _place(asks: Sequence[Mapping[str, float]], free: list[dict[str, float]]) -> int:
    """How many of ``asks`` fit, each on the node with the most free CPU that holds it."""
    placed = 0
    for ask in asks:
        fitting = [
            node
            for node in free
            if all(node.get(r, 0.0) + _EPSILON >= amount for r, amount in ask.items() if amount)
        ]
        if not fitting:
            continue
        node = max(fitting, key=lambda n: n.get("CPU", 0.0))
        for r, amount in ask.items():
            node[r] = node.get(r, 0.0) - amount
        placed += 1
    return placed


def _blocking(asks: Sequence[Mapping[str, float]], nodes: Sequence[NodeCapacity]) -> str:
    """The resource that runs out first: one that no node has enough of for one actor, or
    whose free amount in the cluster is less than all actors ask."""
    for resource in RESOURCES:
        each = max(a[resource] for a in asks)
        if not each:
            continue
        largest = max((n.free.get(resource, 0.0) for n in nodes), default=0.0)
        if largest + _EPSILON < each:
            return resource
    for resource in RESOURCES:
        needed = sum(a[resource] for a in asks)
        if needed and sum(n.free.get(resource, 0.0) for n in nodes) + _EPSILON < needed:
            return resource
    return "CPU"  # both fit in sum, but not together on the same nodes


def _suggest_cpus(
    asks: Sequence[Mapping[str, float]], nodes: Sequence[NodeCapacity]
) -> float | None:
    """The largest ``num_cpus`` (in hundredths) with which every actor fits now."""
    count = len(asks)
    free = [n.free.get("CPU", 0.0) for n in nodes]
    x = math.floor(100 * sum(free) / count) / 100
    while x >= 0.01:
        if sum(math.floor(f / x + _EPSILON) for f in free) >= count:
            return x
        x = round(x - 0.01, 2)
    return None


def _amount(resource: str, value: float) -> str:
    if resource == "memory":
        size = f"{value / 2**30:.2f} GiB" if value >= 2**30 else f"{value / 2**20:.0f} MiB"
        return f"{size} of memory"
    return f"{value:g} {resource}"


def explain(group: str, short: Shortfall, action: str) -> str:
    """The error message for a group that cannot ``action`` ("start", "scale", "upgrade"):
    what is asked, what is free, and what to do."""
    scale = action == "scale"
    return _explain(
        f"group {group!r} cannot {action}",
        "partition actor",
        short,
        fewer="use fewer actors (actors: N, or a larger partitions_per_actor)",
        stop_others="other groups, views: `goka-ray status` lists the groups",
        note=" A live scale starts every new actor before the old ones hand over." if scale else "",
        last="or stop the group and start it with the new settings" if scale else "",
    )


def explain_view(table: str, short: Shortfall) -> str:
    """The error message for view actors of ``table`` that do not fit."""
    return _explain(
        f"the view of {table!r} cannot start",
        "view actor",
        short,
        fewer=f"use fewer replicas (views: {{{table}: {{replicas: N}}}})",
        stop_others="groups, other views",
        setting=f"views.{table}.num_cpus",
    )


def _explain(
    subject: str,
    noun: str,
    short: Shortfall,
    *,
    fewer: str,
    stop_others: str,
    note: str = "",
    last: str = "",
    setting: str = "num_cpus",
) -> str:
    r = short.resource
    actors = (
        f"the {noun} to start asks"
        if short.actors == 1
        else (f"the {short.actors} {noun}s to start ask")
    )
    each = (
        f"{_amount(r, short.each)} each ({_amount(r, short.each * short.actors)} in all)"
        if short.actors > 1
        else _amount(r, short.each)
    )
    asked_line = (
        f"{subject}: {actors} for {each}, but the Ray cluster has "
        f"{_amount(r, short.free)} free (of {_amount(r, short.total)}; at most "
        f"{_amount(r, short.largest_free)} on one node), enough for {short.placeable} of "
        f"them.{note}"
    )
    fixes = []
    if short.suggested_num_cpus is not None:
        fixes.append(f"ask less per actor ({setting}: {short.suggested_num_cpus:g} would fit)")
    elif r == "CPU":
        fixes.append(f"ask less per actor ({setting})")
    else:
        fixes.append("ask less memory per actor (memory)")
    fixes.append(fewer)
    if short.fits_empty_cluster:
        fixes.append(f"stop what holds the rest ({stop_others})")
    fixes.append("add nodes")
    if last:
        fixes.append(last)
    todo = "; ".join(fixes)
    return (
        f"{asked_line} {todo[0].upper()}{todo[1:]}. On a cluster that adds nodes on demand "
        "(the Ray autoscaler), set on_insufficient_resources: wait to start anyway and wait "
        "for them."
    )


def explain_pending(pending: int, short: Shortfall | None) -> str:
    """Why ``pending`` actors of a group wait to be placed (for status and the CLI)."""
    noun = "actor waits" if pending == 1 else "actors wait"
    if short is None:
        return f"{pending} {noun} for Ray to start {'its process' if pending == 1 else 'them'}"
    r = short.resource
    return (
        f"{pending} {noun} for resources: each asks {_amount(r, short.each)}, the cluster has "
        f"{_amount(r, short.free)} free (of {_amount(r, short.total)}); free some, lower "
        "num_cpus (goka-ray scale GROUP --num-cpus X), use fewer actors, or add nodes"
    )
