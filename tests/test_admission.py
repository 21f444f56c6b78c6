"""Admission: what a group asks of Ray against what the nodes have free (no Ray)."""

from __future__ import annotations

from goka_ray.control.actions import ActorResources
from goka_ray.control.admission import (
    NodeCapacity,
    explain,
    explain_pending,
    explain_view,
    shortfall,
    wait_for_fit,
)

GIB = 2**30


def node(name: str, cpu: float, free_cpu: float, memory: float = 8 * GIB) -> NodeCapacity:
    return NodeCapacity(name, {"CPU": cpu, "memory": memory}, {"CPU": free_cpu, "memory": memory})


def actors(n: int, cpus: float, memory: int | None = None) -> list[ActorResources]:
    return [ActorResources(cpus, memory) for _ in range(n)]


def test_actors_that_fit_what_is_free_are_admitted() -> None:
    assert shortfall(actors(4, 0.25), [node("a", 2, 1.0)]) is None
    assert shortfall(actors(4, 0.5), [node("a", 1, 1.0), node("b", 1, 1.0)]) is None
    assert shortfall(actors(8, 0), [node("a", 2, 0)]) is None, "zero CPUs always fit"
    assert shortfall([], []) is None


def test_the_fourth_actor_of_a_second_group_does_not_fit_and_the_shortfall_says_why() -> None:
    # the case of the issue: 2 CPUs, views and a first group hold 1.3 of them
    short = shortfall(actors(4, 0.25), [node("a", 2, 0.7)])
    assert short is not None
    assert (short.resource, short.actors, short.placeable) == ("CPU", 4, 2)
    assert (short.each, short.free, short.total) == (0.25, 0.7, 2)
    assert short.fits_empty_cluster
    assert short.suggested_num_cpus == 0.17
    message = explain("clicks", short, "start")
    assert "group 'clicks' cannot start" in message
    assert "ask for 0.25 CPU each (1 CPU in all)" in message
    assert "0.7 CPU free (of 2 CPU" in message
    assert "enough for 2 of them" in message
    assert "num_cpus: 0.17 would fit" in message
    assert "fewer actors" in message and "add nodes" in message
    assert "stop what holds the rest" in message
    assert "on_insufficient_resources: wait" in message


def test_an_actor_larger_than_any_node_never_fits_even_on_an_empty_cluster() -> None:
    # 2 CPUs in all, but no node holds 1.5 of them
    short = shortfall(actors(1, 1.5), [node("a", 1, 1), node("b", 1, 1)])
    assert short is not None and short.placeable == 0
    assert (short.free, short.largest_free) == (2, 1)
    assert not short.fits_empty_cluster
    assert short.suggested_num_cpus == 1.0
    message = explain("big", short, "start")
    assert "at most 1 CPU on one node" in message
    assert "stop what holds the rest" not in message, "nothing else holds anything"


def test_actors_are_placed_per_node_not_against_the_cluster_sum() -> None:
    # 0.9 CPU free in all, but 0.3 + 0.3 + 0.3 on three nodes: two 0.4 actors do not fit
    nodes = [node(n, 1, 0.3) for n in "abc"]
    short = shortfall(actors(2, 0.4), nodes)
    assert short is not None and short.placeable == 0
    assert short.suggested_num_cpus == 0.3


def test_memory_is_checked_and_reported_in_bytes_units() -> None:
    nodes = [NodeCapacity("a", {"CPU": 4, "memory": 4 * GIB}, {"CPU": 4, "memory": 3 * GIB})]
    short = shortfall(actors(2, 0.25, memory=2 * GIB), nodes)
    assert short is not None and short.resource == "memory"
    assert short.suggested_num_cpus is None
    message = explain("g", short, "scale")
    assert "ask for 2.00 GiB of memory each (4.00 GiB of memory in all)" in message
    assert "3.00 GiB of memory free" in message
    assert "starts every new actor before the old ones hand over" in message


def test_why_actors_are_pending() -> None:
    short = shortfall(actors(1, 0.25), [node("a", 2, 0.1)])
    assert explain_pending(1, short) == (
        "1 actor waits for resources: each asks 0.25 CPU, the cluster has 0.1 CPU free "
        "(of 2 CPU); free some, lower num_cpus (goka-ray scale GROUP --num-cpus X), use fewer "
        "actors, or add nodes"
    )
    assert explain_pending(2, None) == "2 actors wait for Ray to start them"


def test_resources_being_freed_are_waited_for_a_grace_but_an_impossible_ask_is_not() -> None:
    now = [0.0]
    frees = iter([0.1, 0.1, 1.0])  # a stopped group's actors release their CPUs

    def freeing() -> list[NodeCapacity]:
        return [node("a", 2, next(frees))]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    fits = wait_for_fit(actors(2, 0.25), freeing, 5.0, clock=lambda: now[0], sleep=sleep)
    assert fits is None and now[0] == 1.0

    now[0] = 0.0
    never = wait_for_fit(
        actors(1, 4), lambda: [node("a", 2, 2)], 5.0, clock=lambda: now[0], sleep=sleep
    )
    assert never is not None and not never.fits_empty_cluster and now[0] == 0.0

    held = wait_for_fit(
        actors(2, 0.25), lambda: [node("a", 2, 0.1)], 5.0, clock=lambda: now[0], sleep=sleep
    )
    assert held is not None and held.fits_empty_cluster and now[0] == 5.0


def test_a_view_that_does_not_fit_says_so_in_view_terms() -> None:
    short = shortfall(actors(2, 0.1), [node("a", 1, 0.05)])
    assert short is not None
    message = explain_view("clicks-table", short)
    assert message.startswith("the view of 'clicks-table' cannot start: the 2 view actors")
    assert "views.clicks-table.num_cpus" in message and "fewer replicas" in message
