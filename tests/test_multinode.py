"""Beyond one machine (issue 15), on Ray's multi-node test cluster: a head node that hosts no
partition actor and three worker nodes, each a raylet of its own with its own resources;
``remove_node`` kills one without a graceful shutdown, like a lost machine. Ray's GCS health
checks run every second (a node is dead after 3 failed ones), as ``ray-cluster.yaml`` sets them.

- placement: ``spread`` puts the workers on different nodes, every standby on another node
  than its owner, and the status shows where each runs;
- node loss: the node of partition 0's owner is removed while clicks flow; the standbys are
  promoted, no update is lost (counts >= the clicks sent, == with exactly_once), the changelog
  shows one writer at a time (epoch headers), and the group is back on its 2 actors with a
  standby for every partition; once with the coordinator on that node too;
- autoscaling: a backlog scales the group from 1 actor up, the lag drains, a quiet period
  scales it back down, and the counts are exact.

Times are printed, not asserted (``bench/node_loss.py`` measures them).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import cloudpickle
import kafka_helpers
import pytest
import ray
from kafka_helpers import ClickStream, produce_clicks, wait_until
from ray.cluster_utils import Cluster
from test_ownership_faults import ChangelogCheck, every_partition_processing, wait_for_counts

from goka_ray import Context, GroupGraph, Input, Persist, View, codecs, define_group
from goka_ray.control.status import GroupStatus
from goka_ray.examples import click_counter
from goka_ray.kafka.topics import TopicManager
from goka_ray.ray.processor import Processor

# workers of a cluster joined by address do not see the tests' directory: by value (Ray
# pickles with its own copy of cloudpickle)
for pickler in (cloudpickle, ray.cloudpickle):
    pickler.register_pickle_by_value(sys.modules[__name__])
    pickler.register_pickle_by_value(kafka_helpers)

NAMESPACE = "goka-ray-multinode"
PARTITIONS = 4
WORKER_NODES = 3
#: Ray's GCS health checks as ray-cluster.yaml sets them: a lost node is dead after about 3 s
HEALTH_CHECKS = {
    "health_check_initial_delay_ms": 1000,
    "health_check_period_ms": 1000,
    "health_check_timeout_ms": 1000,
    "health_check_failure_threshold": 3,
}
INT = codecs.Int()


def add_worker(cluster: Cluster) -> None:
    cluster.add_node(num_cpus=2, object_store_memory=100 * 1024 * 1024)


@pytest.fixture(scope="module")
def cluster():  # type: ignore[no-untyped-def]
    nodes = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "_system_config": HEALTH_CHECKS}
    )
    for _ in range(WORKER_NODES):
        add_worker(nodes)
    ray.init(address=nodes.address, namespace=NAMESPACE, log_to_driver=False)
    yield nodes
    ray.shutdown()
    nodes.shutdown()


@pytest.fixture
def three_workers(cluster):  # type: ignore[no-untyped-def]
    """The cluster with its three worker nodes (a node-loss test removed one)."""
    while len(list(cluster.worker_nodes)) < WORKER_NODES:
        add_worker(cluster)
    cluster.wait_for_nodes()
    return cluster


def status_or_none(processor: Processor) -> GroupStatus | None:
    try:
        return processor.status()
    except Exception:  # the coordinator is being started again on another node
        return None


def placed(processor: Processor, standbys: int) -> GroupStatus | None:
    """The status once every partition runs and has its standbys placed."""
    st = status_or_none(processor)
    if st is None or not st.ready or st.state != "running":
        return None
    if any(len(p.standby_nodes) != standbys for p in st.partitions):
        return None
    return st


def assert_placement(st: GroupStatus, workers: set[str]) -> None:
    """Spread over the worker nodes; every standby on another node than its owner."""
    owners = {p.actor_name: p.node_id for p in st.partitions}
    assert len(owners) == 2 and len(set(owners.values())) == 2, f"spread: {owners}"
    for p in st.partitions:
        assert p.node_id in workers, p
        assert p.node_id not in p.standby_nodes, f"partition {p.partition}: standby on owner"
        assert set(p.standby_nodes) <= workers
    assert st.warnings == [], st.warnings


def lose_node_of_partition_0(
    cluster: Cluster,
    brokers: str,
    graph: GroupGraph,
    topic: str,
    config: dict[str, Any],
    *,
    exact: bool,
    coordinator_too: bool,
) -> None:
    """Start the group, lose the node of partition 0's owner while clicks flow, check."""
    processor = Processor(brokers, graph, config)
    processor.start()
    try:
        processor.wait_ready(120)
        workers = {n.node_id for n in cluster.worker_nodes}
        before = wait_until_value(lambda: placed(processor, 1), 90, "standbys placed")
        assert_placement(before, workers)
        with ClickStream(brokers, topic, 100, 300, seed=15) as stream:
            st = every_partition_processing(processor, 300)
            lost = st.partitions[0].node_id
            held = [p.partition for p in st.partitions if p.node_id == lost]
            assert (coordinator_node(graph.group) == lost) is coordinator_too
            victim = next(n for n in cluster.worker_nodes if n.node_id == lost)
            killed = time.monotonic()
            cluster.remove_node(victim, allow_graceful=False)

            def moved() -> bool:
                s = status_or_none(processor)
                return bool(s and s.ready) and all(
                    s.partitions[p].node_id not in (None, lost) for p in held
                )

            wait_until(moved, 90, f"partitions {held} running on the remaining nodes")
            running_again = time.monotonic() - killed
            time.sleep(2)  # clicks keep flowing to the new owners
        truth = stream.truth
        check = wait_for_counts(brokers, graph.table_topic, truth)
        check.assert_one_writer_at_a_time()
        if exact:
            assert {u: check.latest[u] for u in truth} == dict(truth), "exactly once"
        seen = check.epochs_seen()
        for p in held:  # the lost owner wrote under its epoch, then only a newer one
            lost_epoch = st.partitions[p].epoch
            assert lost_epoch in seen[p] and seen[p][-1] > lost_epoch, (
                f"partition {p}: a new owner epoch after {lost_epoch}, {seen[p]}"
            )
        survivors = workers - {lost}

        def back_to_two_actors() -> GroupStatus | None:
            s = placed(processor, 1)
            return s if s is not None and s.actors == 2 and not s.warnings else None

        after = wait_until_value(back_to_two_actors, 90, "the group back on 2 actors")
        restored = time.monotonic() - killed
        owners = {p.node_id for p in after.partitions}
        assert owners <= survivors and len(owners) == 2, owners
        for p in after.partitions:
            assert p.node_id not in p.standby_nodes
            assert set(p.standby_nodes) <= survivors
        # 2 workers and a standby per partition, nothing left over (a promoted standby keeps
        # its name)
        assert len(partition_actors(graph.group)) == 2 + PARTITIONS, partition_actors(graph.group)
        assert coordinator_node(graph.group) in survivors | {cluster.head_node.node_id}
        print(
            f"\nnode loss{' with the coordinator' if coordinator_too else ''}: partitions "
            f"{held} running again after {running_again:.1f}s, 2 actors with standbys after "
            f"{restored:.1f}s; epochs {seen}; {truth.total()} clicks, "
            f"{sum(check.latest.get(u, 0) for u in truth) - truth.total()} counted twice"
        )
    finally:
        processor.stop()


def wait_until_value(get: Any, timeout: float, what: str) -> Any:
    found: list[Any] = []

    def ready() -> bool:
        found[:] = [get()]
        return bool(found[0])

    wait_until(ready, timeout, what)
    return found[0]


def coordinator_node(group: str) -> str | None:
    """The node the group's coordinator runs on (as Ray's actor table says)."""
    from goka_ray.control.names import coordinator_name

    for actor in ray._private.state.actors().values():
        if actor["Name"] == coordinator_name(group) and actor["State"] == "ALIVE":
            node: str = actor["Address"]["NodeID"]
            return node
    return None


def partition_actors(group: str) -> list[str]:
    """The live named partition actors of the group (workers and standbys)."""
    from goka_ray.control.names import standby_prefix, worker_prefix

    prefixes = (worker_prefix(group), standby_prefix(group))
    return [n for n in ray.util.list_named_actors() if n.startswith(prefixes)]


def group_config(tmp_path: Any, group: str, **settings: Any) -> dict[str, Any]:
    return {
        "storage_dir": str(tmp_path),
        "namespace": NAMESPACE,
        "groups": {group: {"actors": 2, "num_cpus": 0.25, "placement": "spread", **settings}},
    }


def test_a_lost_node_fails_over_to_standbys_elsewhere_and_the_group_returns_to_two_actors(
    kafka, unique, tmp_path, three_workers
):
    topic = f"{unique}-clicks"
    graph = click_counter(f"{unique}-counter", topic)
    with TopicManager(kafka.bootstrap_servers) as topics:
        topics.ensure_stream(topic, PARTITIONS)
    config = group_config(
        tmp_path, graph.group, standby_replicas=1, processing_guarantee="at_least_once"
    )
    lose_node_of_partition_0(
        three_workers,
        kafka.bootstrap_servers,
        graph,
        topic,
        config,
        exact=False,
        coordinator_too=False,
    )


def test_a_node_lost_with_the_coordinator_on_it_exactly_once(
    kafka, unique, tmp_path, three_workers
):
    topic = f"{unique}-clicks"
    graph = click_counter(f"{unique}-counter", topic)
    with TopicManager(kafka.bootstrap_servers) as topics:
        topics.ensure_stream(topic, PARTITIONS)
    # spread puts the first worker (partitions 0 and 1) on the node with the smallest id
    first = min(n.node_id for n in three_workers.worker_nodes)
    config = group_config(
        tmp_path,
        graph.group,
        standby_replicas=1,
        processing_guarantee="exactly_once",
        coordinator_node=first,
    )
    lose_node_of_partition_0(
        three_workers,
        kafka.bootstrap_servers,
        graph,
        topic,
        config,
        exact=True,
        coordinator_too=True,
    )


# -- autoscaling ----------------------------------------------------------------------------


def slow_click(ctx: Context, msg: str) -> None:
    time.sleep(0.01)  # about 100 clicks per second and partition
    ctx.set_value((ctx.value() or 0) + 1)


def test_a_backlog_scales_the_group_up_and_a_quiet_period_back_down_with_exact_counts(
    kafka, unique, tmp_path, three_workers
):
    brokers = kafka.bootstrap_servers
    topic = f"{unique}-clicks"
    graph = define_group(
        f"{unique}-counter", Input(topic, codecs.String(), slow_click), Persist(codecs.Int())
    )
    with TopicManager(brokers) as topics:
        topics.ensure_stream(topic, PARTITIONS)
    truth, _ = produce_clicks(brokers, topic, 6000, 200, seed=3)  # the burst, before the start
    autoscaling = {
        "min_actors": 1,
        "max_actors": 4,
        "target_lag_per_partition": 50,
        "upscale_delay_s": 1.0,
        "downscale_delay_s": 3.0,
    }
    config = group_config(tmp_path, graph.group, autoscaling=autoscaling, batch_size=20)
    del config["groups"][graph.group]["actors"]
    processor = Processor(brokers, graph, config)
    started = time.monotonic()
    processor.start()
    timeline: list[tuple[float, int, int]] = []  # (seconds, actors, lag) at each change

    def observed() -> GroupStatus:
        st = processor.status()
        if not timeline or timeline[-1][1] != st.actors:
            timeline.append((round(time.monotonic() - started, 1), st.actors, st.lag))
        return st

    try:
        first = processor.wait_ready(120)
        assert first.actors == 1, "it starts on min_actors"

        def decided(n: int) -> GroupStatus | None:
            st = observed()
            return st if len(st.scaling) >= n else None

        up = wait_until_value(lambda: decided(1), 60, "a scale-up")
        (decision,) = up.scaling
        assert decision.actors_from == 1 and decision.actors_to > 1, decision
        assert "above the target 50" in decision.reason
        assert "; 0 msg/s arriving" in decision.reason, "the backlog was there before the start"
        grown = wait_until_value(
            lambda: (s := observed()).actors == decision.actors_to and s.ready and s,
            90,
            "the scaled-up actors running",
        )
        assert "actors in [1, 4]" in (grown.autoscaling or "")
        wait_until(lambda: observed().lag == 0, 120, "the backlog drained")
        drained = time.monotonic() - started
        down = wait_until_value(lambda: decided(2), 60, "a scale-down after the quiet period")
        assert (down.scaling[1].actors_from, down.scaling[1].actors_to) == (decision.actors_to, 1)
        assert "below half the target" in down.scaling[1].reason
        wait_until(
            lambda: (s := observed()).actors == 1 and s.ready and s.state == "running",
            90,
            "back on one actor",
        )
        check = ChangelogCheck(brokers, graph.table_topic)
        check.assert_one_writer_at_a_time()
        assert {u: check.latest.get(u, 0) for u in truth} == dict(truth), "counts exact"
        view = View(brokers, graph.table_topic, INT, {"namespace": NAMESPACE}).start()
        try:
            view.wait_ready(60)
            assert view.get_many(list(truth)) == dict(truth)
        finally:
            view.stop()
        print(
            f"\nautoscaling: {'; '.join(str(d) for d in down.scaling)}; backlog drained after "
            f"{drained:.1f}s; (seconds, actors, lag) at each change: {timeline}"
        )
    finally:
        processor.stop()
