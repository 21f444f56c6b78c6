"""The coordinator's policy on several nodes: placement, node loss, the actor count restored,
autoscaling. Pure: no Ray, an injected clock, no sleeps (the multi-node cluster tests are in
test_multinode.py)."""

from __future__ import annotations

import logging

from test_policy import LEASE, Clock, everyone, make, of, report

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
from goka_ray.control.assignment import rebalance
from goka_ray.control.fencing import MemoryEpochStore
from goka_ray.control.policy import RESIZE_SETTLE, CoordinatorPolicy
from goka_ray.control.status import GroupState, PartitionStatus
from goka_ray.core.config import AutoscalingConfig, GroupConfig
from goka_ray.core.stats import PartitionStats

NODES = frozenset({"node-a", "node-b", "node-c"})


def nodes_of(policy: CoordinatorPolicy, role: Role) -> dict[str, str | None]:
    return {a.name: a.node_id for a in policy.actors.values() if a.role is role}


def owner_node(policy: CoordinatorPolicy, partition: int) -> str | None:
    return policy.actors[policy.holder(partition) or ""].node_id


def settle(policy: CoordinatorPolicy, nodes: frozenset[str] = NODES, rounds: int = 8) -> None:
    """Run status rounds, every actor answering, until nothing is left to do: targets
    recover, sources release, targets go, idle actors retire, standbys are placed."""
    for _ in range(rounds):
        pending = []
        if policy.moves:  # the targets report they recovered
            pending += policy.observe(
                Observation(dict(everyone(policy, "recovered").actors), nodes, hosts=nodes)
            )
        pending += policy.observe(
            Observation(dict(everyone(policy, "running").actors), nodes, hosts=nodes)
        )
        if not pending:
            return
        while pending:
            action = pending.pop(0)
            if isinstance(action, Go):
                pending += policy.went(action.actor, action.partition, action.epoch, True)
            elif isinstance(action, Release):
                pending += policy.released(action.actor, action.partition, True)
            elif isinstance(action, Retire):
                policy.retired(action.actors, True)
    raise AssertionError(f"not settled: moves {policy.moves}")


def test_spread_puts_each_worker_on_another_node_as_far_as_the_cluster_allows():
    policy = make(Clock(), actors=3)
    spawns = of(policy.start(4, NODES), Spawn)
    assert sorted(s.resources.node for s in spawns) == sorted(NODES)
    # two nodes able to host an actor: the third worker shares one of them
    policy = make(Clock(), actors=3)
    spawns = of(policy.start(4, NODES, hosts={"node-a", "node-b"}), Spawn)
    assert sorted(s.resources.node for s in spawns) in (
        ["node-a", "node-a", "node-b"],
        ["node-a", "node-b", "node-b"],
    )
    two = frozenset({"node-a", "node-b"})
    policy.observe(Observation(dict(everyone(policy, "recovering").actors), NODES, hosts=two))
    assert policy.status().warnings == [], "as far as the cluster allows: nothing to say"


def test_a_worker_ray_placed_elsewhere_than_spread_wanted_is_reported():
    policy = make(Clock(), actors=2)
    policy.start(2, NODES)
    first, second = policy.workers()
    reports = {
        first.name: report(policy, {"0": "recovering"}, node="node-a"),
        second.name: report(policy, {"1": "recovering"}, node="node-a"),  # no room elsewhere
    }
    policy.observe(Observation(reports, NODES))
    assert policy.status().warnings == [], "not while partitions still move"
    settle(policy)
    (warning,) = policy.status().warnings
    assert "placement spread: 2 actors on 1 of 3 nodes" in warning


def test_pack_leaves_workers_to_rays_default_scheduling():
    policy = make(Clock(), actors=2, placement="pack")
    spawns = of(policy.start(4, NODES), Spawn)
    assert [(s.resources.node, s.resources.spread) for s in spawns] == [(None, False)] * 2


def test_standbys_are_placed_once_their_owners_nodes_are_known_and_never_there():
    policy = make(Clock(), actors=2, standby_replicas=1)
    policy.start(4, NODES)
    assert not [a for a in policy.actors.values() if a.role is Role.STANDBY]
    actions = policy.observe(everyone(policy, "recovering"))
    follows = {f.partition for f in of(actions, Follow)}
    assert follows == {0, 1, 2, 3}
    for p in range(4):
        (standby,) = policy.standbys_of(p)
        assert standby.node_id != owner_node(policy, p)
    status = policy.status()
    assert all(len(p.standby_nodes) == 0 for p in status.partitions), "not placed yet"
    settle(policy)
    for part in policy.status().partitions:
        assert part.standby_nodes and part.node_id not in part.standby_nodes
    assert policy.status().warnings == []


def test_a_standby_whose_owner_moves_onto_its_node_is_moved_off_it():
    policy = make(Clock(), actors=1, standby_replicas=1)
    policy.start(1, NODES)
    settle(policy)
    (standby,) = policy.standbys_of(0)
    assert standby.node_id != owner_node(policy, 0)
    # a live move (new resources: a new actor) that Ray places on the standby's node
    actions = policy.scale(GroupConfig(actors=1, standby_replicas=1, num_cpus=1.0)) or []
    (spawn,) = of(actions, Spawn)
    reports = dict(everyone(policy, "running").actors)
    reports[spawn.name] = report(policy, {"0": "recovering"}, node=standby.node_id or "")
    actions = policy.observe(Observation(reports, NODES, hosts=NODES))
    assert Kill(standby.name) in actions
    (new,) = [s for s in of(actions, Spawn) if s.role is Role.STANDBY]
    assert new.resources.node not in (None, standby.node_id)
    assert Follow(new.name, 0) in actions
    settle(policy)
    (placed,) = policy.standbys_of(0)
    assert placed.node_id != owner_node(policy, 0) == standby.node_id
    assert policy.status().warnings == []


def test_with_one_node_a_standby_shares_its_owners_node_and_the_group_says_so(caplog):
    one = frozenset({"node-a"})
    policy = make(Clock(), actors=1, standby_replicas=1)
    policy.start(1, one)
    with caplog.at_level(logging.WARNING, logger="goka_ray.control.policy"):
        policy.observe(Observation(dict(everyone(policy, "recovering").actors), one))
        (standby,) = policy.standbys_of(0)
        assert standby.node_id == "node-a"
        policy.observe(Observation(dict(everyone(policy, "recovering").actors), one))
        policy.observe(Observation(dict(everyone(policy, "recovering").actors), one))
    (warning,) = policy.status().warnings
    assert "partition 0: its standby shares node node-a with its owner" in warning
    assert "add a node" in warning
    logged = [r for r in caplog.records if "shares node" in r.getMessage()]
    assert len(logged) == 1, "logged once, when it appears"


def lose_node(
    policy: CoordinatorPolicy, node: str, nodes: frozenset[str] = NODES
) -> tuple[list[Action], frozenset[str]]:
    """A status round right after ``node`` was lost: its actors are silent, on that node."""
    alive = nodes - {node}
    reports = {}
    for actor in list(policy.actors.values()):
        if actor.node_id == node:  # silent: it renews nothing any more
            reports[actor.name] = ActorReport(Reach.SILENT, node_id=node)
            continue
        state = "standby" if actor.role is Role.STANDBY else "running"
        states = {str(p): state for p in actor.partitions}
        reports[actor.name] = report(policy, states, actor.node_id or "x", actor.name)
    return policy.observe(Observation(reports, alive, hosts=alive)), alive


def recovered(policy: CoordinatorPolicy, alive: frozenset[str]) -> list[Action]:
    return policy.observe(Observation(dict(everyone(policy, "recovered").actors), alive))


def test_a_lost_node_is_acted_on_in_the_first_round_and_its_lease_counts_from_its_last_renewal():
    clock = Clock()
    policy = make(clock, actors=2, standby_replicas=1)
    policy.start(4, NODES)
    settle(policy)
    lost = owner_node(policy, 0)
    assert lost is not None
    owner = policy.owner[0]
    renewed = clock.now
    policy.observe(everyone(policy, "running"))  # the owners renew their leases at 100.0
    clock.now += 4.0  # the node is lost 4 s after the last renewal, and noticed now
    actions, alive = lose_node(policy, lost)
    assert Kill(owner) in actions, "no missed rounds to wait for: its node is gone"
    promoted = {a.partition: a.actor for a in of(actions, Assign)}
    assert set(promoted) >= {0, 1}
    assert all("/standby-" in promoted[p] for p in (0, 1))
    assert not of(recovered(policy, alive), Go), "the lost owner's lease still runs"
    clock.now = renewed + LEASE  # a lease after its last renewal, not after the loss
    gos = {g.partition for g in of(recovered(policy, alive), Go)}
    assert gos >= {0, 1}


def test_after_a_failover_the_group_returns_to_its_configured_actor_count():
    clock = Clock()
    policy = make(clock, actors=2, standby_replicas=1)
    policy.start(4, NODES)
    settle(policy)
    lost = owner_node(policy, 0)
    assert lost is not None
    _, alive = lose_node(policy, lost)
    clock.now += LEASE
    settle(policy, alive)
    assert len(policy.workers()) == 3, "the promoted standbys run; no move right away"
    clock.now += RESIZE_SETTLE
    settle(policy, alive)
    workers = policy.workers()
    assert len(workers) == 2, [sorted(w.partitions) for w in workers]
    assert sorted(len(w.partitions) for w in workers) == [2, 2]
    assert policy.state is GroupState.RUNNING and not policy.moves
    for p in range(4):
        (standby,) = policy.standbys_of(p)
        assert standby.node_id in alive and standby.node_id != owner_node(policy, p)
    assert all(w.node_id in alive for w in workers)


def test_a_restarted_coordinator_counts_unknown_leases_from_when_it_started():
    clock = Clock()
    store = MemoryEpochStore()
    old = make(clock, store, actors=2, standby_replicas=1)
    old.start(4, NODES)
    settle(old)
    lost = owner_node(old, 0)
    survivors = {
        name: report(old, {str(p): "standby" for p in a.partitions}, node=a.node_id or "x")
        if a.role is Role.STANDBY
        else report(old, {str(p): "running" for p in a.partitions}, node=a.node_id or "x")
        for name, a in old.actors.items()
        if a.node_id != lost
    }
    started = clock.now + 3.0  # Ray noticed the loss and started the coordinator again
    clock.now = started + 1.5  # its adoption ends 1.5 s later
    policy = make(clock, store, actors=2, standby_replicas=1)
    policy.epochs.restore(granted_before=started)
    roles = {a.name: a.role for a in old.actors.values()}
    alive = NODES - {lost}
    actions = policy.adopt(4, {n: (roles[n], r) for n, r in survivors.items()}, alive, alive)
    promoted = {a.partition for a in of(actions, Assign)}
    assert promoted >= {0, 1}, "the lost owner's standbys take over"
    clock.now = started + LEASE - 0.1
    assert not of(recovered(policy, alive), Go)
    clock.now = started + LEASE  # a lease from its start, not from the end of adoption
    assert {g.partition for g in of(recovered(policy, alive), Go)} >= {0, 1}


def test_rebalance_moves_the_fewest_partitions_and_keeps_workers_on_distinct_nodes():
    after_failover = {"w2": {2, 3}, "s0": {0}, "s1": {1}}
    plan = rebalance(after_failover, 4, 2, {"w2": "b", "s0": "c", "s1": "b"})
    assert plan.moves == {1: "s0"} and plan.new == []
    assert rebalance({"w": {0, 1, 2, 3}}, 4, 4).new == [[1], [2], [3]]
    assert rebalance({"a": {0}, "b": {1}, "c": {2}, "d": {3}}, 4, 1).moves == {
        1: "a",
        2: "a",
        3: "a",
    }
    assert not rebalance({"a": {0, 1}, "b": {2, 3}}, 4, 2)


# -- autoscaling through the policy ---------------------------------------------------------


def lagging(policy: CoordinatorPolicy, lag: int, position: int) -> Observation:
    """Every owner runs its partitions with ``lag`` messages behind and at ``position``."""
    reports = {}
    for actor in policy.actors.values():
        statuses = []
        for p in sorted(actor.partitions):
            state = "standby" if actor.role is Role.STANDBY else "running"
            statuses.append(
                PartitionStatus(
                    partition=p,
                    state=state,
                    node_id=actor.node_id,
                    epoch=policy.epochs.current(p),
                    stats=PartitionStats(offsets={"in": position}, lag={"in": lag}),
                )
            )
        reports[actor.name] = ActorReport(Reach.ANSWERED, tuple(statuses))
    return Observation(reports, NODES, hosts=NODES)


def test_a_backlog_scales_the_group_up_and_a_quiet_period_back_down_through_live_moves():
    clock = Clock()
    autoscaling = AutoscalingConfig(
        min_actors=1,
        max_actors=4,
        target_lag_per_partition=100,
        upscale_delay_s=2.0,
        downscale_delay_s=5.0,
    )
    policy = make(clock, autoscaling=autoscaling)
    assert len(of(policy.start(4, NODES), Spawn)) == 1, "it starts on min_actors"
    settle(policy)
    # a burst: 5,000 messages behind per partition, processed at 100 msg/s per partition
    actions: list[Action] = []
    for second in range(3):
        clock.now += 1
        actions = policy.observe(lagging(policy, 5000 - 100 * second, 100 * second))
    spawns = of(actions, Spawn)
    assert len(spawns) == 3 and policy.state is GroupState.SCALING
    (decision,) = policy.status().scaling
    assert (decision.actors_from, decision.actors_to) == (1, 4)
    assert "above the target 100" in decision.reason
    assert "1 -> 4 actors" in str(decision)
    # no sample while partitions move: the count holds
    settle(policy)
    assert len(policy.workers()) == 4 and all(len(w.partitions) == 1 for w in policy.workers())
    # drained and quiet for the downscale delay (and a rate window after the last rounds'
    # samples without offsets): back to one actor
    quiet = clock.now
    while len(policy.status().scaling) < 2:
        clock.now += 1
        policy.observe(lagging(policy, 0, 20_000))
        assert clock.now - quiet < 30
    assert clock.now - quiet >= 5.0
    assert [(d.actors_from, d.actors_to) for d in policy.status().scaling] == [(1, 4), (4, 1)]
    assert "below half the target" in policy.status().scaling[-1].reason
    settle(policy)
    assert len(policy.workers()) == 1 and policy.target_actors == 1
    assert "1 actors in [1, 4]" in (policy.status().autoscaling or "")
