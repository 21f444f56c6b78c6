"""The coordinator's policy as a pure state machine: no Ray, an injected clock, no sleeps."""

from __future__ import annotations

import itertools

import pytest

from goka_ray import GokaRayError, GroupConfig, ProcessingError
from goka_ray.control.fencing import EpochTable
from goka_ray.control.policy import (
    HUNG_AFTER_MISSES,
    Action,
    ActorReport,
    Assign,
    CoordinatorPolicy,
    Follow,
    Go,
    Kill,
    Observation,
    Reach,
    Release,
    Retire,
    Role,
    Spawn,
)
from goka_ray.control.status import GroupState, PartitionStatus

LEASE = 6.0
NODES = frozenset({"node-a", "node-b", "node-c"})


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock, **config: object) -> CoordinatorPolicy:
    ids = (f"{i:06x}" + "0" * 26 for i in itertools.count(1))
    return CoordinatorPolicy(
        "g",
        GroupConfig(**config),  # type: ignore[arg-type]
        EpochTable(LEASE, clock=clock),
        clock=clock,
        new_id=lambda: next(ids),
    )


def of(actions: list[Action], kind: type) -> list:  # type: ignore[type-arg]
    return [a for a in actions if isinstance(a, kind)]


def report(policy: CoordinatorPolicy, states: dict[str, str], node: str = "node-a") -> ActorReport:
    """An answer from an actor: partition -> state, at the epoch the policy gave it."""
    statuses = []
    for p_state in states.items():
        p, state = int(p_state[0]), p_state[1]
        move = policy.moves.get(p)
        epoch = move.epoch if move is not None else policy.epochs.current(p)
        statuses.append(PartitionStatus(partition=p, state=state, node_id=node, epoch=epoch))
    return ActorReport(Reach.ANSWERED, tuple(statuses))


def everyone(policy: CoordinatorPolicy, state: str) -> Observation:
    """Every worker answers: each partition it holds is in ``state``."""
    reports = {}
    for actor in policy.actors.values():
        node = actor.node_id or "node-a"
        states = {
            str(p): "standby" if actor.role is Role.STANDBY else state for p in actor.partitions
        }
        reports[actor.name] = report(policy, states, node)
    return Observation(reports, NODES)


def run_to_owners(policy: CoordinatorPolicy) -> None:
    """Recover every move and let the targets go (outcomes reported as a shell would)."""
    pending = policy.observe(everyone(policy, "recovered"))
    while pending:
        action = pending.pop(0)
        if isinstance(action, Go):
            pending += policy.went(action.actor, action.partition, action.epoch, True)
        elif isinstance(action, Release):
            pending += policy.released(action.actor, action.partition, True)


def test_start_places_the_planned_actors_and_each_partition_goes_once_recovered():
    clock = Clock()
    policy = make(clock, actors=2)
    actions = policy.start(4, NODES)
    spawns = of(actions, Spawn)
    assert [s.role for s in spawns] == [Role.WORKER, Role.WORKER]
    assigns = of(actions, Assign)
    assert sorted((a.partition, a.epoch) for a in assigns) == [(p, 1) for p in range(4)]
    assert {a.actor for a in assigns if a.partition in (0, 1)} == {spawns[0].name}
    assert policy.state is GroupState.RUNNING

    # still recovering: nothing to do
    assert policy.observe(everyone(policy, "recovering")) == []
    actions = policy.observe(everyone(policy, "recovered"))
    # a fresh partition never had an owner: no lease to wait out
    assert sorted((g.partition, g.epoch) for g in of(actions, Go)) == [(p, 1) for p in range(4)]
    for go in of(actions, Go):
        policy.went(go.actor, go.partition, go.epoch, True)
    assert policy.owner == {
        0: spawns[0].name,
        1: spawns[0].name,
        2: spawns[1].name,
        3: spawns[1].name,
    }
    assert not policy.moves
    assert policy.status().ready is False  # statuses said recovered in that round
    policy.observe(everyone(policy, "running"))
    assert policy.status().ready


def test_a_live_move_releases_the_old_owner_before_the_new_one_goes():
    clock = Clock()
    policy = make(clock, actors=1)
    policy.start(2, NODES)
    run_to_owners(policy)
    (old,) = {a.name for a in policy.workers()}

    actions = policy.scale(GroupConfig(actors=2)) or []
    assert policy.state is GroupState.SCALING
    # every planned actor is new: each partition moves to its own new actor, under epoch 2
    targets = {a.partition: a.actor for a in of(actions, Assign)}
    assert sorted(targets) == [0, 1] and len(set(targets.values())) == 2
    assert {a.epoch for a in of(actions, Assign)} == {2}
    # the targets recover while the old owner processes: their epoch is not current yet
    assert policy.renew(1, 1) and not policy.renew(1, 2)
    statuses = {old: report(policy, {"0": "running", "1": "running"})}
    statuses[targets[1]] = report(policy, {"1": "recovered"})
    statuses[targets[0]] = report(policy, {"0": "recovering"})
    actions = policy.observe(Observation(statuses, NODES))
    assert actions == [Release(old, 1)], "no Go before the old owner released"
    # the epoch moved on: the old owner's renewals are refused from now on
    assert not policy.renew(1, 1) and policy.renew(1, 2)
    assert policy.renew(0, 1), "partition 0 has not moved yet"
    assert policy.released(old, 1, stopped=True) == [Go(targets[1], 1, 2)]
    policy.went(targets[1], 1, 2, True)
    assert policy.owner[1] == targets[1]

    statuses[targets[0]] = report(policy, {"0": "recovered"})
    statuses[old] = report(policy, {"0": "running"})
    assert policy.observe(Observation(statuses, NODES)) == [Release(old, 0)]
    # the old actor holds nothing any more once it released its last partition: retired
    assert policy.released(old, 0, stopped=True) == [Go(targets[0], 0, 2), Retire((old,))]
    policy.went(targets[0], 0, 2, True)
    assert old not in policy.actors and not policy.moves
    policy.observe(everyone(policy, "running"))
    assert policy.state is GroupState.RUNNING


def test_an_unconfirmed_release_waits_out_the_old_lease():
    clock = Clock()
    policy = make(clock, actors=1)
    policy.start(1, NODES)
    run_to_owners(policy)
    (old,) = {a.name for a in policy.workers()}
    policy.scale(GroupConfig(actors=1, num_cpus=1.0))  # new resources: a new actor
    actions = policy.observe(everyone(policy, "recovered"))
    (release,) = of(actions, Release)
    assert policy.released(release.actor, 0, stopped=False) == [Retire((old,))]
    clock.now += LEASE - 0.1
    assert not of(policy.observe(everyone(policy, "recovered")), Go)
    clock.now += 0.2
    (go,) = of(policy.observe(everyone(policy, "recovered")), Go)
    assert go.epoch == 2


def test_a_hung_actor_is_replaced_after_missed_rounds_and_its_lease_is_waited_out():
    clock = Clock()
    policy = make(clock, actors=2)
    policy.start(4, NODES)
    run_to_owners(policy)
    hung = policy.owner[0]
    other = policy.owner[2]

    def silent_round() -> list[Action]:
        reports = {
            hung: ActorReport(Reach.SILENT),
            other: report(policy, {"2": "running", "3": "running"}),
        }
        return policy.observe(Observation(reports, NODES))

    for _ in range(HUNG_AFTER_MISSES - 1):
        assert silent_round() == []
    actions = silent_round()
    assert Kill(hung) in actions
    (spawn,) = of(actions, Spawn)
    assert spawn.resources.node == "node-a"  # near the old copy
    assert sorted((a.partition, a.epoch) for a in of(actions, Assign)) == [(0, 2), (1, 2)]
    assert policy.restarts == {0: 1, 1: 1}
    actions = policy.observe(everyone(policy, "recovered"))
    assert not of(actions, Go), "a hung owner may still write until its lease ends"
    clock.now += LEASE
    assert {g.partition for g in of(policy.observe(everyone(policy, "recovered")), Go)} == {0, 1}


def test_an_actor_that_ray_reports_dead_on_a_live_node_is_replaced_at_once():
    clock = Clock()
    policy = make(clock, actors=2)
    policy.start(2, NODES)
    run_to_owners(policy)
    policy.observe(everyone(policy, "running"))
    dead = policy.owner[1]
    reports = {n: report(policy, {"0": "running"}) for n in policy.actors if n != dead}
    reports[dead] = ActorReport(Reach.DEAD)
    actions = policy.observe(Observation(reports, NODES))
    assert Kill(dead) in actions and len(of(actions, Spawn)) == 1
    actions = policy.observe(everyone(policy, "recovered"))
    assert [(g.partition, g.epoch) for g in of(actions, Go)] == [(1, 2)]


def test_an_actor_waiting_for_resources_is_not_hung():
    clock = Clock()
    policy = make(clock, actors=1)
    policy.start(1, NODES)
    (name,) = policy.actors
    for _ in range(HUNG_AFTER_MISSES * 3):
        assert policy.observe(Observation({name: ActorReport(Reach.PENDING)}, NODES)) == []
    assert name in policy.actors and not policy.restarts


def test_a_callback_failure_fails_the_group_and_removes_every_actor():
    clock = Clock()
    policy = make(clock, actors=2)
    policy.start(2, NODES)
    run_to_owners(policy)
    failing = policy.owner[0]
    error = ProcessingError("g", "in", 0, 7, "k", ValueError("bad"))
    obs = everyone(policy, "running")
    failed = report(policy, {"0": "failed"})
    obs = Observation(
        {**obs.actors, failing: ActorReport(Reach.ANSWERED, failed.statuses, {0: error})}, NODES
    )
    actions = policy.observe(obs)
    assert policy.state is GroupState.FAILED and policy.error is error
    (retire,) = of(actions, Retire)
    assert sorted(retire.actors) == sorted({policy.owner[0], policy.owner[1]})
    assert "ProcessingError" in (policy.status().error or "")


def test_other_failures_restart_the_partition_in_place_until_max_restarts():
    clock = Clock()
    policy = make(clock, actors=1, max_restarts=1)
    policy.start(1, NODES)
    run_to_owners(policy)
    (name,) = policy.actors

    def fail_once() -> list[Action]:
        failed = report(policy, {"0": "failed"})
        reports = {name: ActorReport(Reach.ANSWERED, failed.statuses, {0: OSError("disk")})}
        return policy.observe(Observation(reports, NODES))

    assert of(fail_once(), Assign) == [Assign(name, 0, 2)]
    # the same failed status seen again (the actor has not handled the assign yet) is old news
    stale = ActorReport(
        Reach.ANSWERED, (PartitionStatus(partition=0, state="failed", epoch=1),), {0: None}
    )
    assert policy.observe(Observation({name: stale}, NODES)) == []
    assert policy.restarts == {0: 1}
    run_to_owners_after_lease(policy, clock)
    fail_once()
    assert policy.state is GroupState.FAILED
    assert "disk" in str(policy.error)


def run_to_owners_after_lease(policy: CoordinatorPolicy, clock: Clock) -> None:
    policy.observe(everyone(policy, "recovered"))
    clock.now += LEASE
    run_to_owners(policy)


def test_a_standby_is_promoted_when_its_owner_dies_and_a_new_one_follows():
    clock = Clock()
    policy = make(clock, actors=1, standby_replicas=1)
    actions = policy.start(2, NODES)
    spawns = of(actions, Spawn)
    standbys = [s for s in spawns if s.role is Role.STANDBY]
    assert len(standbys) == 2
    assert {f.partition for f in of(actions, Follow)} == {0, 1}
    run_to_owners(policy)
    policy.observe(everyone(policy, "running"))
    owner = policy.owner[0]

    reports = dict(everyone(policy, "running").actors)
    reports[owner] = ActorReport(Reach.DEAD)
    actions = policy.observe(Observation(reports, NODES))
    promoted = {a.partition: a.actor for a in of(actions, Assign)}
    assert set(promoted) == {0, 1}
    assert all("/standby-" in name for name in promoted.values())
    assert not [s for s in of(actions, Spawn) if s.role is Role.WORKER]
    # each promoted standby is replaced by a new one
    assert len([s for s in of(actions, Spawn) if s.role is Role.STANDBY]) == 2
    assert all(policy.actors[n].role is Role.WORKER for n in promoted.values())


def test_recover_ahead_holds_every_go_until_every_partition_recovered():
    clock = Clock()
    policy = make(clock, actors=2, recover_ahead=True)
    policy.start(2, NODES)
    first = policy.owner.get(0) or policy.moves[0].target
    reports = dict(everyone(policy, "recovering").actors)
    reports[first] = report(policy, {"0": "recovered"})
    assert not of(policy.observe(Observation(reports, NODES)), Go)
    assert len(of(policy.observe(everyone(policy, "recovered")), Go)) == 2


def test_visits_and_scaling_need_a_running_group():
    clock = Clock()
    policy = make(clock, actors=1)
    policy.start(2, NODES)
    with pytest.raises(GokaRayError, match="moving"):
        policy.visit_targets()
    run_to_owners(policy)
    assert [p for _, p in policy.visit_targets()] == [0, 1]
    assert policy.scale(GroupConfig(actors=1)) is None  # nothing to move
    policy.stop()
    assert policy.state is GroupState.STOPPED and not policy.actors
    with pytest.raises(GokaRayError, match="stopped; cannot scale"):
        policy.scale(GroupConfig(actors=2))
