"""Goka parity on Ray: rebalance callbacks, recover-ahead and hot standby (real Ray, broker)."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import kafka_helpers
import pytest
import ray
import ray.cloudpickle as cloudpickle
from kafka_helpers import count_click, produce_clicks, read_records, wait_until

from goka_ray import Assignment, GokaRayError, Input, Persist, Visitor, codecs, define_group
from goka_ray.core.storage import node_storage_dir, partition_dir
from goka_ray.examples import click_counter
from goka_ray.kafka.topics import TopicManager
from goka_ray.ray.processor import Processor
from goka_ray.ray.view import View

cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(kafka_helpers)

NAMESPACE = "goka-ray-parity-tests"
RECOVER_AHEAD = True


@pytest.fixture
def setup(kafka, unique, tmp_path, ray_local):  # type: ignore[no-untyped-def]
    processors: list[Processor] = []

    def make(partitions: int, on_rebalance=None, **group_config):  # type: ignore[no-untyped-def]
        topic = f"{unique}-clicks"
        graph = click_counter(f"{unique}-counter", topic)
        with TopicManager(kafka.bootstrap_servers) as topics:
            topics.ensure_stream(topic, partitions)
        config = {
            "storage_dir": str(tmp_path / "data"),
            "namespace": NAMESPACE,
            "groups": {graph.group: {"num_cpus": 0.1, **group_config}},
        }
        p = Processor(kafka.bootstrap_servers, graph, config, on_rebalance=on_rebalance)
        processors.append(p)
        return p, topic, graph

    yield make
    for p in processors:
        try:
            p.stop()
        except Exception:
            pass


class Journal:
    """A rebalance callback that appends to a file (actors and the test share the disk)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, a: Assignment) -> None:
        with self.path.open("a") as f:
            f.write(f"{a.partition} {a.event} {a.actor_name} {a.epoch}\n")

    def events(self) -> list[tuple[int, str, str, int]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            p, event, actor, epoch = line.split()
            out.append((int(p), event, actor, int(epoch)))
        return out


def test_rebalance_callback_sees_every_assignment_and_revocation(setup, tmp_path):
    journal = Journal(tmp_path / "journal.txt")
    processor, _, _ = setup(2, on_rebalance=journal, actors=1)
    processor.start()
    first = processor.wait_ready(120)
    wait_until(lambda: len(journal.events()) == 2, 30, "two assignments")
    (owner,) = {p.actor_name for p in first.partitions}
    assert sorted(journal.events()) == [(0, "assigned", owner, 1), (1, "assigned", owner, 1)]

    processor.scale(actors=2)
    after = processor.wait_scaled(120)
    moved = [p.partition for p in after.partitions if p.actor_name != owner]
    assert moved, "scaling to 2 actors moves a partition"
    for p in moved:
        new_owner = after.partitions[p].actor_name
        per_partition = [(e, a, ep) for q, e, a, ep in journal.events() if q == p]
        # the old owner gave it up before the new one (a newer epoch) took it
        assert per_partition[-2:] == [("revoked", owner, 1), ("assigned", new_owner, 2)]

    processor.stop()
    last = {}
    for p, event, actor, _ in journal.events():
        last[p] = (event, actor)
    assert last == {p.partition: ("revoked", p.actor_name) for p in after.partitions}


def slow_update(ctx, storage, key, value):  # type: ignore[no-untyped-def]
    """Stores like the default, slowly: recovering partition 1's 3,000 records takes ~3 s."""
    time.sleep(0.001)
    if value is None:
        storage.delete(key)
    else:
        storage.set(key, value)


def test_recover_ahead_starts_processing_only_when_every_table_is_recovered(
    kafka, unique, tmp_path, ray_local
):
    brokers = kafka.bootstrap_servers
    topic = f"{unique}-clicks"
    graph = define_group(
        f"{unique}-counter",
        Input(topic, codecs.String(), count_click),
        Persist(codecs.Int(), update=slow_update),
    )
    with TopicManager(brokers) as topics:
        topics.ensure_stream(topic, 2)
        topics.ensure_table(graph.table_topic, 2)
    # a changelog for partition 1 only: its recovery takes seconds, partition 0's none
    produce_to(
        brokers, graph.table_topic, 1, ((f"k{i}", codecs.Int().encode(1)) for i in range(3000))
    )
    config = {
        "storage_dir": str(tmp_path / "data"),
        "namespace": NAMESPACE,
        "groups": {graph.group: {"num_cpus": 0.1, "actors": 2, "recover_ahead": RECOVER_AHEAD}},
    }
    processor = Processor(brokers, graph, config)
    processor.start()
    try:
        seen: list[list[str]] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            states = [p.state for p in processor.status().partitions]
            if not seen or seen[-1] != states:
                seen.append(states)
            waiting = [s for s in states if s in ("starting", "idle", "recovering")]
            assert not ("running" in states and waiting), (
                f"a partition processes while another still recovers: {seen}"
            )
            if all(s == "running" for s in states):
                break
            time.sleep(0.05)
        # partition 0 was ready long before partition 1, and waited for it
        assert ["recovered", "recovering"] in seen, seen
        status = processor.wait_ready(60)
        assert status.partitions[1].keys == 3000
    finally:
        processor.stop()


def produce_to(brokers: str, topic: str, partition: int, items) -> None:  # type: ignore[no-untyped-def]
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 20})
    for key, value in items:
        producer.produce(topic, key=key.encode(), value=value, partition=partition)
        producer.poll(0)
    assert producer.flush(60) == 0


@pytest.mark.parametrize("standbys", [1, 0], ids=["standby", "no-standby"])
def test_standby_takes_over_a_dead_owner_after_only_the_tail(setup, kafka, standbys):
    processor, topic, graph = setup(2, standby_replicas=standbys, actors=2)
    brokers = kafka.bootstrap_servers
    truth, _ = produce_clicks(brokers, topic, 6_000, users=3_000, seed=3)
    processor.start()
    processor.wait_ready(120)
    wait_until(
        lambda: sum(p.processed for p in processor.status().partitions) == 6_000, 90, "processed"
    )
    # published and committed too (a status can show a batch processed but not yet published)
    wait_until(
        lambda: sum(p.offsets.get(topic, 0) for p in processor.status().partitions) == 6_000,
        90,
        "committed",
    )
    wait_until(
        lambda: [p.standbys for p in processor.status().partitions] == [standbys] * 2,
        60,
        "standbys",
    )
    before = processor.status().partitions[0]
    assert before.keys > 1000
    time.sleep(2.5)  # the standby follows the changelog as it is written: let it read the tail

    # the owner's node is lost, and its local copy with it: without a standby, the
    # replacement would recover the whole table from the changelog
    node_dir = node_storage_dir(processor.config.storage_dir, before.node_id or "")
    local_copy = partition_dir(node_dir, graph.group, graph.table_topic, 0)
    assert local_copy.is_dir()
    shutil.rmtree(local_copy)
    ray.kill(ray.get_actor(before.actor_name, namespace=NAMESPACE), no_restart=True)
    wait_until(
        lambda: (
            processor.status().partitions[0].restarts == 1
            and processor.status().partitions[0].state == "running"
        ),
        90,
        "failover",
    )
    after = processor.status().partitions[0]
    if standbys:
        assert "/standby-p0-" in (after.actor_name or ""), after.actor_name
        # the promoted copy was current: it read (almost) nothing of the changelog again
        assert after.recovered < before.keys / 10, (after.recovered, before.keys)
        # a new standby replaces the promoted one
        wait_until(lambda: processor.status().partitions[0].standbys == 1, 60, "new standby")
    else:  # the baseline: a full recovery of the partition's table
        assert "/worker-" in (after.actor_name or "")
        assert after.recovered >= before.keys

    more, _ = produce_clicks(brokers, topic, 2_000, users=3_000, seed=4)
    truth.update(more)
    view = View(brokers, graph.table_topic, codecs.Int(), processor.config).start()
    try:
        view.wait_ready(60)
        wait_until(lambda: view.get_many(list(truth)) == dict(truth), 90, "exact counts")
    finally:
        view.stop()


def reset_to(ctx, meta):  # type: ignore[no-untyped-def]
    """A visitor: every count becomes ``meta``."""
    ctx.set_value(meta)


def test_visit_all_runs_inside_every_partition_and_writes_the_table(
    kafka, unique, tmp_path, ray_local
):
    brokers = kafka.bootstrap_servers
    topic = f"{unique}-clicks"
    graph = define_group(
        f"{unique}-counter",
        Input(topic, codecs.String(), count_click),
        Visitor("reset", reset_to),
        Persist(codecs.Int()),
    )
    with TopicManager(brokers) as topics:
        topics.ensure_stream(topic, 4)
    truth, _ = produce_clicks(brokers, topic, 2_000, users=150, seed=9)
    config = {
        "storage_dir": str(tmp_path / "data"),
        "namespace": NAMESPACE,
        "groups": {graph.group: {"num_cpus": 0.1, "actors": 2}},
    }
    processor = Processor(brokers, graph, config)
    processor.start()
    try:
        processor.wait_ready(120)
        wait_until(
            lambda: sum(p.processed for p in processor.status().partitions) == 2_000,
            90,
            "processed",
        )
        assert processor.visit_all("reset", 100) == len(truth)
        more, _ = produce_clicks(brokers, topic, 500, users=150, seed=10)
        view = processor.view()
        try:
            view.wait_ready(60)
            expected = {u: 100 + more.get(u, 0) for u in truth} | {
                u: n for u, n in more.items() if u not in truth
            }
            wait_until(lambda: dict(view.items()) == expected, 90, "visited counts + new clicks")
        finally:
            view.stop()
        with pytest.raises(GokaRayError, match="no-such-visitor"):
            processor.visit_all("no-such-visitor", 1)
        assert processor.status().state == "running"  # a bad name does not fail the group
    finally:
        processor.stop()


def test_a_hung_actor_is_killed_and_replaced_without_loss(setup, kafka):
    import os
    import signal

    processor, topic, graph = setup(2, actors=2)
    brokers = kafka.bootstrap_servers
    truth, _ = produce_clicks(brokers, topic, 1_000, users=80, seed=21)
    processor.start()
    processor.wait_ready(120)
    wait_until(
        lambda: sum(p.processed for p in processor.status().partitions) == 1_000, 90, "processed"
    )
    hung = processor.status().partitions[0]
    assert hung.pid
    os.kill(hung.pid, signal.SIGSTOP)  # alive for Ray, but answers nothing: hung
    try:
        wait_until(
            lambda: (
                (p := processor.status().partitions[0]).restarts == 1
                and p.state == "running"
                and p.actor_name != hung.actor_name
            ),
            120,
            "the hung actor to be replaced",
        )
    finally:
        try:
            os.kill(hung.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    # the coordinator killed the hung process (a stopped process still dies of SIGKILL)
    wait_until(lambda: not _alive(hung.pid), 30, "the hung process to be gone")
    more, _ = produce_clicks(brokers, topic, 1_000, users=80, seed=22)
    truth.update(more)
    view = processor.view()
    try:
        view.wait_ready(60)
        # exact: the owner hung while idle (all committed); its replacement lost nothing
        wait_until(lambda: view.get_many(list(truth)) == dict(truth), 90, "exact counts")
    finally:
        view.stop()
    epochs = {
        int(headers["goka-ray.epoch"])
        for *_, headers in read_records(brokers, graph.table_topic, 1)
    }
    # the hung owner wrote under its epoch, then only its replacement, under a newer one
    replacement = processor.status().partitions[0].epoch
    assert hung.epoch in epochs and max(epochs) == replacement > hung.epoch, (
        f"epochs in partition 0's changelog {sorted(epochs)}: the hung owner's {hung.epoch}, "
        f"its replacement's {replacement}"
    )


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
