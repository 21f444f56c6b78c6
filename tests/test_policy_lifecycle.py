"""The coordinator's policy, without Ray: actors waiting to be placed, what a start or a scale
asks of the cluster, rolling upgrades of a group's code, and message counts over owners."""

from __future__ import annotations

import itertools

import pytest

from goka_ray import GokaRayError, GroupConfig
from goka_ray.control.actions import (
    Action,
    ActorReport,
    ActorResources,
    Assign,
    Follow,
    Go,
    Kill,
    Observation,
    Reach,
    Release,
    Role,
    Spawn,
)
from goka_ray.control.fencing import EpochTable, MemoryEpochStore
from goka_ray.control.policy import HUNG_AFTER_MISSES, CoordinatorPolicy
from goka_ray.control.status import GroupState, PartitionStatus
from goka_ray.control.totals import Counts, PartitionTotals
from goka_ray.core.stats import PartitionStats

LEASE = 6.0
NODES = frozenset({"node-a", "node-b"})
IDS = itertools.count(1)


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


class MemoryTotalsStore:
    def __init__(self) -> None:
        self.saved: dict[int, Counts] = {}

    def load_totals(self) -> dict[int, Counts]:
        return dict(self.saved)

    def save_totals(self, totals: dict[int, Counts]) -> None:  # type: ignore[override]
        self.saved = dict(totals)


def make(
    code: str = "code-a",
    store: MemoryEpochStore | None = None,
    totals: MemoryTotalsStore | None = None,
    **config: object,
) -> CoordinatorPolicy:
    clock = Clock()
    epochs = EpochTable(LEASE, clock=clock, store=store or MemoryEpochStore())
    epochs.restore()
    return CoordinatorPolicy(
        "g",
        GroupConfig(**config),  # type: ignore[arg-type]
        epochs,
        clock=clock,
        new_id=lambda: f"{next(IDS):06x}" + "0" * 26,
        code=code,
        totals=PartitionTotals(totals),
    )


def of(actions: list[Action], kind: type) -> list:  # type: ignore[type-arg]
    return [a for a in actions if isinstance(a, kind)]


def answer(policy: CoordinatorPolicy, name: str, state: str, processed: int = 0) -> ActorReport:
    """``name`` reports every partition it holds in ``state`` (standbys: standby)."""
    actor = policy.actors[name]
    statuses = []
    for p in sorted(actor.partitions):
        move = policy.moves.get(p)
        target = move is not None and move.target == name
        epoch = move.epoch if move is not None and target else policy.epochs.current(p)
        standby = actor.role is Role.STANDBY
        statuses.append(
            PartitionStatus(
                partition=p,
                state="standby" if standby else state,
                epoch=0 if standby else epoch,
                stats=PartitionStats(processed=processed),
                code=actor.code,
                node_id="node-a",
            )
        )
    return ActorReport(Reach.ANSWERED, tuple(statuses))


def everyone(policy: CoordinatorPolicy, state: str, **reach: Reach) -> Observation:
    reports = {
        name: ActorReport(reach[name]) if name in reach else answer(policy, name, state)
        for name in policy.actors
    }
    return Observation(reports, NODES)


def carry_out(policy: CoordinatorPolicy, actions: list[Action]) -> list[Action]:
    """Report the outcomes of releases and gos as the shell does; returns every action."""
    done, queue = [], list(actions)
    while queue:
        action = queue.pop(0)
        done.append(action)
        if isinstance(action, Go):
            queue += policy.went(action.actor, action.partition, action.epoch, True)
        elif isinstance(action, Release):
            queue += policy.released(action.actor, action.partition, True)
    return done


def settle(policy: CoordinatorPolicy) -> list[Action]:
    """Status rounds (recovered, then running) until nothing moves any more."""
    done: list[Action] = []
    for _ in range(20):
        actions = carry_out(policy, policy.observe(everyone(policy, "recovered")))
        actions += carry_out(policy, policy.observe(everyone(policy, "running")))
        done += actions
        if not actions and not policy.moves:
            return done
    raise AssertionError(f"still moving: {policy.moves}")


def started(**config: object) -> CoordinatorPolicy:
    policy = make(**config)
    policy.start(4, NODES)
    settle(policy)
    return policy


# -- actors waiting to be placed ------------------------------------------------------------


def test_a_worker_waiting_for_resources_shows_pending_and_is_never_replaced() -> None:
    policy = make(actors=2)
    policy.start(4, NODES)
    placed, waiting = sorted(policy.actors)
    for _ in range(HUNG_AFTER_MISSES * 4):
        actions = carry_out(
            policy, policy.observe(everyone(policy, "recovered", **{waiting: Reach.PENDING}))
        )
        assert not of(actions, Kill) and not of(actions, Spawn)
    assert waiting in policy.actors and not policy.restarts
    policy.observe(everyone(policy, "running", **{waiting: Reach.PENDING}))
    status = policy.status(waiting="1 actor waits for resources")
    held = policy.actors[waiting].partitions
    assert {p.partition: p.state for p in status.partitions} == {
        p: "pending" if p in held else "running" for p in range(4)
    }
    assert {p.actor_name for p in status.partitions if p.partition in held} == {waiting}
    assert status.waiting == "1 actor waits for resources"
    assert all(p.restarts == 0 for p in status.partitions)
    # placed at last: it recovers and goes like any other
    settle(policy)
    status = policy.status(waiting="stale")
    assert status.ready and status.waiting is None


def test_a_standby_waiting_for_resources_is_neither_replaced_nor_doubled() -> None:
    policy = make(actors=1, standby_replicas=1)
    policy.start(2, NODES)
    # standbys are placed once their owner's node is known (away from it)
    placed = policy.observe(everyone(policy, "recovered"))
    standbys = {a.name for a in policy.actors.values() if a.role is Role.STANDBY}
    assert {s.name for s in of(placed, Spawn)} == standbys and len(standbys) == 2
    pending = dict.fromkeys(standbys, Reach.PENDING)
    for _ in range(HUNG_AFTER_MISSES * 4):
        actions = carry_out(policy, policy.observe(everyone(policy, "running", **pending)))
        assert not of(actions, Kill) and not of(actions, Spawn)
    assert standbys <= set(policy.actors)


def test_a_release_of_a_move_to_a_pending_actor_is_not_a_restart() -> None:
    # scaling down while the new actors cannot be placed: the moves to them are called off
    policy = started(actors=1)
    policy.scale(GroupConfig(actors=2))
    new = [a.name for a in policy.workers() if a.name not in policy.owner.values()]
    pending = dict.fromkeys(new, Reach.PENDING)
    carry_out(policy, policy.observe(everyone(policy, "running", **pending)))
    actions = policy.scale(GroupConfig(actors=1, num_cpus=0.1)) or []
    released = {a.actor for a in of(actions, Release)}
    assert released == set(new), "the called-off targets release what they never started"
    settle(policy)
    assert not policy.restarts and len(policy.workers()) == 1


def test_a_restarted_coordinator_kills_actors_never_placed_without_counting_restarts() -> None:
    store = MemoryEpochStore()
    old = make(store=store, actors=2)
    old.start(4, NODES)
    found = {name: (Role.WORKER, ActorReport(Reach.PENDING)) for name in old.actors}
    policy = make(store=store, actors=2)
    actions = policy.adopt(4, found)
    assert {k.actor for k in of(actions, Kill)} == set(found)
    assert len(of(actions, Spawn)) == 2 and not policy.restarts
    policy.clock.now += LEASE  # type: ignore[attr-defined]
    settle(policy)
    assert policy.status().ready and all(p.restarts == 0 for p in policy.status().partitions)


# -- what a command asks of the cluster -----------------------------------------------------


def test_a_start_asks_for_every_worker_and_standby() -> None:
    policy = make(partitions_per_actor=2, standby_replicas=1, num_cpus=0.5, memory=100)
    assert policy.start_demand(4) == [ActorResources(0.5, 100)] * (2 + 4)


def test_a_scale_asks_for_every_new_worker_and_nothing_when_nothing_moves() -> None:
    policy = started(actors=2)
    assert policy.scale_demand(GroupConfig(actors=2)) == []
    assert (
        policy.scale_demand(GroupConfig(actors=4, num_cpus=0.5)) == [ActorResources(0.5, None)] * 4
    )
    assert policy.scale(GroupConfig(actors=2)) is None
    assert policy.upgrade_demand() == [ActorResources(0.25, None)]


# -- rolling upgrades -----------------------------------------------------------------------


def test_an_upgrade_hands_each_worker_over_to_one_running_the_new_code_one_at_a_time() -> None:
    policy = started(actors=2)
    old = {a.name for a in policy.workers()}
    epochs_before = {p: policy.epochs.current(p) for p in range(4)}
    actions = policy.upgrade("code-b") or []
    assert policy.state is GroupState.UPGRADING
    (spawn,) = of(actions, Spawn)
    assert policy.actors[spawn.name].code == "code-b"
    first = sorted(a.partition for a in of(actions, Assign))
    assert len(first) == 2, "one worker's partitions at a time"
    assert all(policy.owner[p] in old for p in range(4)), "the old owners run meanwhile"

    steps = [first]
    for _ in range(10):
        done = carry_out(policy, policy.observe(everyone(policy, "recovered")))
        done += carry_out(policy, policy.observe(everyone(policy, "running")))
        assigns = of(done, Assign)
        if assigns:
            steps.append(sorted(a.partition for a in assigns))
        # a hand-over, as in a scale: the old owner releases before the new owner goes
        for go in of(done, Go):
            assert done.index(go) > min(
                (i for i, a in enumerate(done) if isinstance(a, Release)), default=-1
            )
        if policy.state is GroupState.RUNNING:
            break
    assert sorted(steps) == [[0, 1], [2, 3]]
    assert policy.state is GroupState.RUNNING
    assert {w.code for w in policy.workers()} == {"code-b"}
    assert not old & set(policy.actors), "the old workers were retired"
    assert all(policy.epochs.current(p) == epochs_before[p] + 1 for p in range(4))
    assert policy.status().code == "code-b"
    assert policy.upgrade("code-b") is None, "nothing left to upgrade"


def test_an_upgrade_replaces_the_standbys_at_once() -> None:
    policy = started(actors=1, standby_replicas=1)
    standbys = {a.name for a in policy.actors.values() if a.role is Role.STANDBY}
    actions = policy.upgrade("code-b") or []
    assert {k.actor for k in of(actions, Kill)} == standbys
    actions = policy.observe(everyone(policy, "recovering"))
    follows = of(actions, Follow)
    assert sorted(f.partition for f in follows) == [0, 1, 2, 3]
    assert all(policy.actors[f.actor].code == "code-b" for f in follows)


def test_upgrades_and_scales_wait_for_each_other() -> None:
    policy = started(actors=2)
    policy.scale(GroupConfig(actors=4))
    # an upgrade during a scale (the autoscaler's, say) starts once the scale's moves are done
    assert policy.upgrade("code-b") == []
    assert policy.state is GroupState.UPGRADING and policy.moves
    with pytest.raises(GokaRayError, match="wait until the upgrade is done"):
        policy.scale(GroupConfig(actors=2))
    settle(policy)
    assert policy.state is GroupState.RUNNING and not policy.moves
    assert len(policy.workers()) == 4, "the scale's count holds"
    assert {w.code for w in policy.workers()} == {"code-b"}


def test_a_restarted_coordinator_goes_on_with_an_upgrade_under_way() -> None:
    store = MemoryEpochStore()
    old = make(store=store, actors=2)
    old.start(4, NODES)
    settle(old)
    old.upgrade("code-b")
    settle_first = carry_out(old, old.observe(everyone(old, "recovered")))
    assert of(settle_first, Go)
    old.observe(everyone(old, "running"))
    # one worker runs code-b, the other still code-a; the coordinator restarts
    found = {name: (Role.WORKER, answer(old, name, "running")) for name in old.actors}
    codes = {a.code for a in old.workers()}
    assert codes == {"code-a", "code-b"}
    policy = make("code-b", store=store, actors=2)
    actions = policy.adopt(4, found)
    assert not of(actions, Spawn), "the planned actors run: nothing to place"
    assert policy.state is GroupState.UPGRADING
    settle(policy)
    assert policy.state is GroupState.RUNNING
    assert {w.code for w in policy.workers()} == {"code-b"}


# -- counts over owners ---------------------------------------------------------------------


def test_processed_counts_add_up_over_moves_failovers_and_coordinator_restarts() -> None:
    store = MemoryEpochStore()
    totals = MemoryTotalsStore()
    policy = make(store=store, totals=totals, actors=1)
    policy.start(1, NODES)
    settle(policy)
    (first,) = policy.owner.values()
    policy.observe(Observation({first: answer(policy, first, "running", 100)}, NODES))
    assert policy.status().partitions[0].processed == 100
    # a live move: the old owner's final count comes with its release
    policy.scale(GroupConfig(actors=1, num_cpus=0.5))
    (second,) = [a for a in policy.actors if a != first]
    actions = policy.observe(
        Observation(
            {
                first: answer(policy, first, "running", 110),
                second: answer(policy, second, "recovered"),
            },
            NODES,
        )
    )
    (release,) = of(actions, Release)
    final = PartitionStatus(
        partition=0, state="stopped", epoch=1, stats=PartitionStats(processed=120)
    )
    for go in of(policy.released(first, 0, True, final), Go):
        policy.went(go.actor, go.partition, go.epoch, True)
    policy.observe(Observation({second: answer(policy, second, "running", 30)}, NODES))
    assert policy.status().partitions[0].processed == 150
    assert totals.saved == {0: Counts(120, 0, 0)}, "settled counts are stored"
    # the coordinator restarts: what was settled is kept, the adopted owner's count added
    again = make(store=store, totals=totals, actors=1)
    again.adopt(1, {second: (Role.WORKER, answer(policy, second, "running", 40))})
    again.observe(Observation({second: answer(again, second, "running", 45)}, NODES))
    assert again.status().partitions[0].processed == 165


# -- with the autoscaler --------------------------------------------------------------------


def test_an_autoscaled_group_is_admitted_by_its_planned_count_and_upgraded_after_its_moves():
    from dataclasses import replace

    from test_placement_policy import NODES as THREE
    from test_placement_policy import lagging
    from test_placement_policy import settle as settle_on

    from goka_ray.core.config import AutoscalingConfig

    scaling = AutoscalingConfig(
        min_actors=1, max_actors=4, target_lag_per_partition=100, upscale_delay_s=2.0
    )
    policy = make(autoscaling=scaling)
    clock = policy.clock
    assert policy.start_demand(4) == [ActorResources(0.25, None)], "it starts on min_actors"
    policy.start(4, THREE)
    settle_on(policy)
    assert policy.scale_demand(policy.config) == [], "nothing changes: nothing to admit"
    # a backlog: the autoscaler goes to 4 actors through live moves
    for second in range(3):
        clock.now += 1  # type: ignore[attr-defined]
        policy.observe(lagging(policy, 5000 - 100 * second, 100 * second))
    assert policy.state is GroupState.SCALING and policy.target_actors == 4
    # a scale of the actors' size is admitted by the count the autoscaler keeps
    bigger = replace(policy.config, num_cpus=0.5)
    assert policy.scale_demand(bigger) == [ActorResources(0.5, None)] * 4
    # an upgrade asked for meanwhile starts once the autoscaler's moves are done; the
    # autoscaler decides nothing while it runs
    assert policy.upgrade("code-b") == []
    assert policy.state is GroupState.UPGRADING
    settle_on(policy, rounds=40)
    assert policy.state is GroupState.RUNNING
    assert len(policy.workers()) == 4 and {w.code for w in policy.workers()} == {"code-b"}
    assert len(policy.status().scaling) == 1, "one decision: the scale-up"
