"""The coordinator's policy as a pure state machine: no Ray, an injected clock, no sleeps."""

from __future__ import annotations

import itertools

import pytest

from goka_ray import GokaRayError, GroupConfig, ProcessingError
from goka_ray.control.actions import (
    Action,
    ActorReport,
    Assign,
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
from goka_ray.control.fencing import EpochRecord, EpochTable, MemoryEpochStore
from goka_ray.control.policy import HUNG_AFTER_MISSES, UNCONFIRMED_GRACE, CoordinatorPolicy
from goka_ray.control.status import GroupState, PartitionStatus

LEASE = 6.0
NODES = frozenset({"node-a", "node-b", "node-c"})


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


IDS = itertools.count(1)


def make(
    clock: Clock, store: MemoryEpochStore | None = None, **config: object
) -> CoordinatorPolicy:
    """A policy on ``store`` (the epoch record a restarted coordinator finds again)."""
    epochs = EpochTable(LEASE, clock=clock, store=store or MemoryEpochStore())
    epochs.restore()
    return CoordinatorPolicy(
        "g",
        GroupConfig(**config),  # type: ignore[arg-type]
        epochs,
        clock=clock,
        new_id=lambda: f"{next(IDS):06x}" + "0" * 26,
    )


def of(actions: list[Action], kind: type) -> list:  # type: ignore[type-arg]
    return [a for a in actions if isinstance(a, kind)]


def report(
    policy: CoordinatorPolicy,
    states: dict[str, str],
    node: str = "node-a",
    actor: str | None = None,
) -> ActorReport:
    """An answer from an actor: partition -> state, at the epoch the policy gave it. An
    ``actor`` that runs a partition renews its lease, as a running owner does when it writes."""
    statuses = []
    for p_state in states.items():
        p, state = int(p_state[0]), p_state[1]
        move = policy.moves.get(p)
        epoch = move.epoch if move is not None else policy.epochs.current(p)
        statuses.append(PartitionStatus(partition=p, state=state, node_id=node, epoch=epoch))
        if actor is not None and state == "running":
            policy.renew(p, epoch, actor)
    return ActorReport(Reach.ANSWERED, tuple(statuses))


def everyone(policy: CoordinatorPolicy, state: str) -> Observation:
    """Every worker answers: each partition it holds is in ``state``."""
    reports = {}
    for actor in policy.actors.values():
        node = actor.node_id or "node-a"
        states = {
            str(p): "standby" if actor.role is Role.STANDBY else state for p in actor.partitions
        }
        reports[actor.name] = report(policy, states, node, actor.name)
    return Observation(reports, NODES)


def with_reports(obs: Observation, **changes: object) -> Observation:
    from dataclasses import replace

    return replace(obs, **changes)  # type: ignore[arg-type]


def run_to_owners(policy: CoordinatorPolicy) -> None:
    """Recover every move and let the targets go (outcomes reported as a shell would)."""
    pending = policy.observe(everyone(policy, "recovered"))
    while pending:
        action = pending.pop(0)
        if isinstance(action, Go):
            pending += policy.went(action.actor, action.partition, action.epoch, True)
        elif isinstance(action, Release):
            pending += policy.released(action.actor, action.partition, True)
    for p, owner in policy.owner.items():  # the owners process and renew their leases
        policy.renew(p, policy.epochs.current(p), owner)


def test_start_places_the_planned_actors_and_each_partition_goes_once_recovered():
    clock = Clock()
    policy = make(clock, actors=2)
    actions = policy.start(4, NODES)
    spawns = of(actions, Spawn)
    assert [s.role for s in spawns] == [Role.WORKER, Role.WORKER]
    assigns = of(actions, Assign)
    assert sorted((a.partition, a.epoch) for a in assigns) == [(p, 1) for p in range(4)]
    assert {a.actor for a in assigns if a.partition in (0, 1)} == {spawns[0].name}
    assert actions.index(spawns[0]) < actions.index(assigns[0]), "spawned before assigned"
    assert policy.state is GroupState.RUNNING

    # still recovering: nothing to do
    assert policy.observe(everyone(policy, "recovering")) == []
    actions = policy.observe(everyone(policy, "recovered"))
    # a fresh partition never had an owner: no lease to wait out
    assert sorted((g.partition, g.epoch) for g in of(actions, Go)) == [(p, 1) for p in range(4)]
    for go in of(actions, Go):
        assert policy.renew(go.partition, 1, go.actor), "Go only for the current epoch"
        policy.went(go.actor, go.partition, go.epoch, True)
    first, second = spawns[0].name, spawns[1].name
    assert policy.owner == {0: first, 1: first, 2: second, 3: second}
    assert not policy.moves
    assert policy.status().ready is False  # statuses said recovered in that round
    policy.observe(everyone(policy, "running"))
    assert policy.status().ready


def test_a_live_move_releases_the_old_owner_before_its_epoch_ends():
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
    # the targets recover while the old owner processes under epoch 1
    statuses = {old: report(policy, {"0": "running", "1": "running"})}
    statuses[targets[1]] = report(policy, {"1": "recovered"})
    statuses[targets[0]] = report(policy, {"0": "recovering"})
    actions = policy.observe(Observation(statuses, NODES))
    assert actions == [Release(old, 1)], "no Go before the old owner released"
    # the old owner finishes its batch and commits under a lease it can still renew
    assert policy.renew(1, 1, old) and not policy.renew(1, 2, targets[1])
    assert policy.released(old, 1, stopped=True) == [Go(targets[1], 1, 2)]
    # the released owner needs no lease wait; its epoch is over
    assert not policy.renew(1, 1, old) and policy.renew(1, 2, targets[1])
    policy.went(targets[1], 1, 2, True)
    assert policy.owner[1] == targets[1]
    assert policy.renew(0, 1, old), "partition 0 has not moved yet"

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
    assert not policy.renew(0, 1, old), "its epoch ended: it cannot renew"
    clock.now += LEASE - 0.1
    assert not of(policy.observe(everyone(policy, "recovered")), Go)
    clock.now += 0.2
    (go,) = of(policy.observe(everyone(policy, "recovered")), Go)
    assert go.epoch == 2


def hang(policy: CoordinatorPolicy, hung: str, gone: frozenset[str] = frozenset()) -> list[Action]:
    """A status round in which ``hung`` does not answer and every other actor runs."""
    reports = dict(everyone(policy, "running").actors)
    reports[hung] = ActorReport(Reach.SILENT)
    return policy.observe(Observation(reports, NODES, gone=gone))


def recovered_round(
    policy: CoordinatorPolicy, gone: frozenset[str] = frozenset(), nodes: frozenset[str] = NODES
) -> list[Action]:
    return policy.observe(with_reports(everyone(policy, "recovered"), gone=gone, alive_nodes=nodes))


def test_a_hung_owner_is_killed_and_its_partitions_wait_until_ray_confirms_it_gone():
    clock = Clock()
    policy = make(clock, actors=2)
    policy.start(4, NODES)
    run_to_owners(policy)
    hung = policy.owner[0]
    for _ in range(HUNG_AFTER_MISSES - 1):
        assert hang(policy, hung) == []
    actions = hang(policy, hung)
    assert actions[0] == Kill(hung)
    (spawn,) = of(actions, Spawn)
    assert spawn.resources.node == "node-a"  # near the old copy
    assert sorted((a.partition, a.epoch) for a in of(actions, Assign)) == [(0, 2), (1, 2)]
    assert policy.restarts == {0: 1, 1: 1}
    # fenced at once: the hung owner's next renewal is refused, whenever it wakes up
    assert not policy.renew(0, 1, hung) and not policy.renew(1, 1, hung)
    assert not of(recovered_round(policy), Go), "the hung process may still write"
    clock.now += LEASE + 1
    # on a live node Ray ends a killed process within seconds: the lease alone is not enough
    assert not of(recovered_round(policy), Go)
    gos = of(recovered_round(policy, gone=frozenset({hung})), Go)
    assert sorted((g.partition, g.epoch) for g in gos) == [(0, 2), (1, 2)]


def test_a_dead_owner_confirmed_gone_is_replaced_without_waiting_for_its_lease():
    clock = Clock()
    policy = make(clock, actors=2)
    policy.start(2, NODES)
    run_to_owners(policy)
    policy.observe(everyone(policy, "running"))
    dead = policy.owner[1]
    reports = dict(everyone(policy, "running").actors)
    reports[dead] = ActorReport(Reach.DEAD)
    actions = policy.observe(Observation(reports, NODES))
    assert Kill(dead) in actions and len(of(actions, Spawn)) == 1
    assert not of(recovered_round(policy), Go)
    actions = recovered_round(policy, gone=frozenset({dead}))
    assert [(g.partition, g.epoch) for g in of(actions, Go)] == [(1, 2)]


def test_an_owner_on_a_lost_node_is_waited_out_for_one_lease():
    clock = Clock()
    policy = make(clock, actors=1)
    policy.start(1, NODES)
    run_to_owners(policy)
    policy.observe(everyone(policy, "running"))
    owner = policy.owner[0]
    lost_node = policy.actors[owner].node_id
    survivors = NODES - {lost_node}
    policy.observe(Observation({owner: ActorReport(Reach.DEAD)}, survivors))
    assert not of(recovered_round(policy, nodes=survivors), Go)
    clock.now += LEASE
    # never confirmed (its node is gone), but its lease is over: Go
    assert [g.partition for g in of(recovered_round(policy, nodes=survivors), Go)] == [0]


def test_an_owner_ray_never_confirms_gone_is_given_up_on_after_a_grace():
    clock = Clock()
    policy = make(clock, actors=1)
    policy.start(1, NODES)
    run_to_owners(policy)
    policy.observe(everyone(policy, "running"))
    owner = policy.owner[0]
    policy.observe(Observation({owner: ActorReport(Reach.DEAD)}, NODES))
    clock.now += LEASE + UNCONFIRMED_GRACE - 1
    assert not of(recovered_round(policy), Go)
    clock.now += 1
    assert of(recovered_round(policy), Go)


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
    owners = sorted({policy.owner[0], policy.owner[1]})
    actions = policy.observe(obs)
    assert policy.state is GroupState.FAILED and policy.error is error
    (retire,) = of(actions, Retire)
    assert sorted(retire.actors) == owners
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
    assert not of(recovered_round(policy), Go), "the failed runner's lease is waited out"
    clock.now += LEASE
    run_to_owners(policy)
    assert policy.owner == {0: name}
    fail_once()
    assert policy.state is GroupState.FAILED
    assert "disk" in str(policy.error)


def test_a_standby_is_promoted_when_its_owner_dies_and_a_new_one_follows():
    clock = Clock()
    policy = make(clock, actors=1, standby_replicas=1)
    actions = policy.start(2, NODES)
    assert not of(actions, Follow), "no standby before the owner's node is known"
    (worker,) = of(actions, Spawn)
    actions = policy.observe(everyone(policy, "recovering"))  # the owner reports its node
    standbys = [s for s in of(actions, Spawn) if s.role is Role.STANDBY]
    assert len(standbys) == 2
    assert {f.partition for f in of(actions, Follow)} == {0, 1}
    owner_node = policy.actors[worker.name].node_id
    assert owner_node is not None and all(s.resources.node != owner_node for s in standbys)
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
    gos = of(recovered_round(policy, gone=frozenset({owner})), Go)
    assert {(g.partition, g.actor) for g in gos} == set(promoted.items())


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


def test_actors_nobody_tracks_are_killed():
    clock = Clock()
    policy = make(clock, actors=1)
    policy.start(1, NODES)
    run_to_owners(policy)
    (name,) = policy.actors
    stray = "goka-ray/g/worker-stray"
    obs = with_reports(everyone(policy, "running"), named=frozenset({name, stray}))
    assert policy.observe(obs) == [Kill(stray)]
    assert policy.observe(obs) == [], "killed once"


# -- a restarted coordinator ----------------------------------------------------------------


def group_of_two(clock: Clock, store: MemoryEpochStore, **config: object) -> CoordinatorPolicy:
    """4 partitions on 2 actors, all running under epoch 1 (the issue's set-up)."""
    policy = make(clock, store, actors=2, **config)
    policy.start(4, NODES)
    run_to_owners(policy)
    policy.observe(everyone(policy, "running"))
    return policy


def restart(
    clock: Clock,
    store: MemoryEpochStore,
    old: CoordinatorPolicy,
    answers: dict[str, ActorReport],
    floors=None,
    **config,
):  # type: ignore[no-untyped-def]
    """A new coordinator on the same record; ``answers`` are the actors' status answers."""
    policy = make(clock, store, actors=2, **config)
    policy.epochs.restore(floors or {})
    roles = {a.name: a.role for a in old.actors.values()}
    found = {name: (roles.get(name, Role.WORKER), r) for name, r in answers.items()}
    return policy, policy.adopt(4, found)


def test_after_a_restart_a_hung_owner_is_killed_and_its_partitions_get_new_epochs():
    """The issue's fault: one owner hung (SIGSTOP), then the coordinator restarted."""
    clock = Clock()
    store = MemoryEpochStore()
    old = group_of_two(clock, store)
    hung, alive = old.owner[0], old.owner[2]
    clock.now += 1
    answers = {
        hung: ActorReport(Reach.SILENT),
        alive: report(old, {"2": "running", "3": "running"}),
    }
    policy, actions = restart(clock, store, old, answers)
    assert Kill(hung) in actions
    assert policy.owner == {2: alive, 3: alive}, "the live owner keeps its partitions"
    # before its first status round, the new coordinator shows what the adoption round saw
    shown = policy.status().partitions
    assert [(p.state, p.epoch) for p in shown[2:]] == [("running", 1)] * 2
    assert policy.renew(2, 1, alive) and policy.renew(3, 1, alive)
    # the orphans go to ONE new actor (the plan), under epochs never used before
    (spawn,) = of(actions, Spawn)
    assert sorted((a.partition, a.epoch, a.actor) for a in of(actions, Assign)) == [
        (0, 2, spawn.name),
        (1, 2, spawn.name),
    ]
    assert len(policy.workers()) == 2
    # the hung owner's renewals are refused from now on: when it wakes up it writes nothing
    assert not policy.renew(0, 1, hung) and not policy.renew(1, 1, hung)
    # a restarted coordinator cannot know who else held a lease: a full lease is waited out,
    # even once Ray confirms the hung actor gone
    assert not of(recovered_round(policy, gone=frozenset({hung})), Go)
    clock.now += LEASE
    gos = of(recovered_round(policy), Go)
    assert sorted((g.partition, g.epoch) for g in gos) == [(0, 2), (1, 2)]
    assert store.load_epochs()[0] == EpochRecord(issued=2, current=2, owner=spawn.name)


def test_after_a_restart_an_owner_on_an_older_epoch_is_not_adopted():
    clock = Clock()
    store = MemoryEpochStore()
    old = group_of_two(clock, store)
    stale, alive = old.owner[0], old.owner[2]
    # partitions 0 and 1 moved on to a new owner before the coordinator died (epoch 2) ...
    old.scale(GroupConfig(actors=2, num_cpus=1.0))
    run_to_owners(old)
    new_owner = old.owner[0]
    assert old.epochs.current(0) == 2 and new_owner != stale
    # ... yet the old owner answers that it still runs them under epoch 1, the new one too
    answers = {
        stale: ActorReport(
            Reach.ANSWERED,
            tuple(PartitionStatus(partition=p, state="running", epoch=1) for p in (0, 1)),
        ),
        new_owner: report(old, {"0": "running", "1": "running"}),
        old.owner[2]: report(old, {"2": "running", "3": "running"}),
    }
    policy, actions = restart(clock, store, old, answers)
    assert policy.owner[0] == new_owner and policy.owner[1] == new_owner
    assert {(r.actor, r.partition) for r in of(actions, Release)} == {(stale, 0), (stale, 1)}
    assert Retire((stale,)) in actions, "left with nothing, the stale actor is retired"
    assert not policy.renew(0, 1, stale)
    assert alive not in {a.actor for a in of(actions, Release)}


def test_after_a_restart_a_move_under_way_goes_on_from_where_it_was():
    clock = Clock()
    store = MemoryEpochStore()
    old = make(clock, store, actors=1)
    old.start(2, NODES)
    run_to_owners(old)
    source = old.owner[0]
    actions = old.scale(GroupConfig(actors=2)) or []
    targets = {a.partition: a.actor for a in of(actions, Assign)}
    running = tuple(PartitionStatus(partition=p, state="running", epoch=1) for p in (0, 1))
    answers = {
        source: ActorReport(Reach.ANSWERED, running),
        targets[0]: report(old, {"0": "recovered"}),
        targets[1]: report(old, {"1": "recovering"}),
    }
    # the record: epoch 2 issued to the targets, epoch 1 current with the source
    policy = make(clock, store, actors=2)
    actions = policy.adopt(2, {name: (Role.WORKER, r) for name, r in answers.items()})
    assert not of(actions, Spawn) and not of(actions, Kill) and not of(actions, Assign)
    assert policy.owner == {0: source, 1: source}
    assert {p: (m.target, m.source, m.epoch) for p, m in policy.moves.items()} == {
        0: (targets[0], source, 2),
        1: (targets[1], source, 2),
    }
    assert policy.renew(0, 1, source), "the source keeps processing until it releases"
    # partition 0's target recovered: the hand-over goes on as before the restart
    assert policy.observe(Observation(answers, NODES)) == [Release(source, 0)]
    assert policy.released(source, 0, stopped=True) == [Go(targets[0], 0, 2)]


def test_after_a_restart_a_standby_that_answers_takes_over_instead_of_a_fresh_actor():
    clock = Clock()
    store = MemoryEpochStore()
    old = make(clock, store, actors=1, standby_replicas=1)
    old.start(2, NODES)
    run_to_owners(old)
    old.observe(everyone(old, "running"))
    owner = old.owner[0]
    standbys = {p: old.standbys_of(p)[0].name for p in (0, 1)}
    answers = {owner: ActorReport(Reach.DEAD)} | {
        name: report(old, {str(p): "standby"}) for p, name in standbys.items()
    }
    policy = make(clock, store, actors=1, standby_replicas=1)
    found = {owner: (Role.WORKER, answers[owner])} | {
        n: (Role.STANDBY, answers[n]) for n in standbys.values()
    }
    actions = policy.adopt(2, found)
    assert {(a.partition, a.actor) for a in of(actions, Assign)} == set(standbys.items())
    assert not [s for s in of(actions, Spawn) if s.role is Role.WORKER]


def test_a_restarted_coordinator_with_no_actor_left_places_the_group_again():
    clock = Clock()
    store = MemoryEpochStore()
    old = group_of_two(clock, store)
    pending = "goka-ray/g/worker-pending"
    answers = {name: ActorReport(Reach.DEAD) for name in (old.owner[0], old.owner[2])}
    answers[pending] = ActorReport(Reach.PENDING)
    policy, actions = restart(clock, store, old, answers, floors={0: 9})
    assert {k.actor for k in of(actions, Kill)} == {old.owner[0], old.owner[2], pending}
    assert len(of(actions, Spawn)) == 2, "the configured two actors, not one per partition"
    epochs = {a.partition: a.epoch for a in of(actions, Assign)}
    assert epochs == {0: 10, 1: 2, 2: 2, 3: 2}, "above the record and the changelog's floor"
    killed = frozenset({old.owner[0], old.owner[2], pending})  # Ray confirms they ended
    assert not of(recovered_round(policy, gone=killed), Go), "a full lease first"
    clock.now += LEASE
    assert len(of(recovered_round(policy, gone=killed), Go)) == 4


def test_after_a_restart_actors_on_a_lost_node_are_waited_out_for_one_lease():
    clock = Clock()
    store = MemoryEpochStore()
    old = group_of_two(clock, store)
    lost = old.owner[0]
    answers = {
        lost: ActorReport(Reach.DEAD, node_id="node-lost"),
        old.owner[2]: report(old, {"2": "running", "3": "running"}),
    }
    policy, _ = restart(clock, store, old, answers)
    assert not of(recovered_round(policy), Go)
    clock.now += LEASE
    # never confirmed gone, but its node is lost and a lease has passed since the restart
    assert sorted(g.partition for g in of(recovered_round(policy), Go)) == [0, 1]


def test_a_group_stopped_cleanly_starts_again_without_a_lease_wait():
    clock = Clock()
    store = MemoryEpochStore()
    old = group_of_two(clock, store)
    (retire,) = of(old.stop(), Retire)
    old.retired(retire.actors, confirmed=True)
    policy = make(clock, store, actors=2)
    policy.start(4, NODES)
    gos = of(recovered_round(policy), Go)
    assert sorted((g.partition, g.epoch) for g in gos) == [(p, 2) for p in range(4)]


def test_a_group_whose_stop_was_not_confirmed_waits_out_the_leases_when_started_again():
    clock = Clock()
    store = MemoryEpochStore()
    old = group_of_two(clock, store)
    (retire,) = of(old.stop(), Retire)
    old.retired(retire.actors, confirmed=False)
    policy = make(clock, store, actors=2)
    policy.start(4, NODES)
    # fenced as soon as recovered; the older owners' leases may still run
    assert not of(recovered_round(policy), Go)
    clock.now += LEASE
    assert len(of(recovered_round(policy), Go)) == 4


def test_a_restart_in_the_middle_of_a_scale_carries_it_through_to_the_configured_actors():
    clock = Clock()
    store = MemoryEpochStore()
    old = group_of_two(clock, store)
    sources = {p: old.owner[p] for p in range(4)}
    actions = old.scale(GroupConfig(actors=4)) or []
    targets = {a.actor for a in of(actions, Assign)}
    # the coordinator dies while the 4 new actors are still being placed
    answers = {name: ActorReport(Reach.PENDING) for name in targets}
    for name in set(sources.values()):
        held = [p for p, s in sources.items() if s == name]
        running = (PartitionStatus(partition=p, state="running", epoch=1) for p in held)
        answers[name] = ActorReport(Reach.ANSWERED, tuple(running))
    policy = make(clock, store, actors=4)  # the scaled config, as the coordinator keeps it
    actions = policy.adopt(4, {name: (Role.WORKER, r) for name, r in answers.items()})
    assert {k.actor for k in of(actions, Kill)} == targets
    # each old owner keeps one of its partitions; the other one moves to a new actor
    assert len(of(actions, Spawn)) == 2
    assert {a.epoch for a in of(actions, Assign)} == {3}, "epoch 2 went to the killed targets"
    assert all(policy.renew(p, 1, sources[p]) for p in range(4)), "the owners go on meanwhile"
    run_to_owners(policy)  # hand-overs: released by the live owners, no lease to wait out
    assert len(policy.workers()) == 4 and not policy.moves
    assert sorted(len(policy._holding(w.name)) for w in policy.workers()) == [1, 1, 1, 1]
