"""Changed code under a running group's name: never attached silently, upgraded live.

Real local Ray, real broker, real LevelDB. The two versions of the callback count the same
way and also count, per key, how many messages each version processed, so the table shows
which code ran.
"""

from __future__ import annotations

import sys
import time

import cloudpickle
import kafka_helpers
import pytest
import ray
from kafka_helpers import ClickStream, produce_clicks, read_records, wait_until

from goka_ray import (
    CodeChangedError,
    Input,
    Persist,
    Processor,
    UpgradeError,
    View,
    codecs,
    define_group,
    fingerprint,
)
from goka_ray.core.graph import GroupGraph
from goka_ray.kafka.topics import TopicManager

cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(kafka_helpers)

NAMESPACE = "goka-ray-upgrade-tests"
PARTITIONS = 4


def versioned(group: str, topic: str, version: str, table_codec: object = None) -> GroupGraph:
    """Counts clicks per user as ``n``, and as ``<version>`` the clicks this code counted."""

    def count(ctx, msg):  # type: ignore[no-untyped-def]
        value = dict(ctx.value() or {"n": 0})
        value["n"] += 1
        value[version] = value.get(version, 0) + 1
        ctx.set_value(value)

    codec = table_codec or codecs.Json()
    return define_group(group, Input(topic, codecs.String(), count), Persist(codec))


@pytest.fixture
def setup(kafka, unique, tmp_path, ray_local):  # type: ignore[no-untyped-def]
    topic, group = f"{unique}-clicks", f"{unique}-counter"
    with TopicManager(kafka.bootstrap_servers) as topics:
        topics.ensure_stream(topic, PARTITIONS)
    config = {
        "storage_dir": str(tmp_path),
        "namespace": NAMESPACE,
        "groups": {group: {"num_cpus": 0.1, "actors": 2}},
    }
    started: list[Processor] = []

    def processor(graph: GroupGraph) -> Processor:
        p = Processor(kafka.bootstrap_servers, graph, config)
        started.append(p)
        return p

    yield group, topic, processor, config
    if started:  # every handle reaches the same coordinator: one stop removes the group
        started[0].stop()


def test_a_rolling_upgrade_moves_every_partition_to_the_new_code_counts_exact(kafka, setup):
    group, topic, processor, config = setup
    brokers = kafka.bootstrap_servers
    v1, v2 = versioned(group, topic, "v1"), versioned(group, topic, "v2")
    running = processor(v1)
    running.start()
    before = running.wait_ready(120)
    old_actors = {p.actor_name for p in before.partitions}
    assert {p.code for p in before.partitions} == {fingerprint(v1).short} == {before.code}
    epochs = {p.partition: p.epoch for p in before.partitions}

    with ClickStream(brokers, topic, 100, 60, seed=500) as stream:
        time.sleep(1)
        started = time.monotonic()
        assert running.upgrade(v2, timeout=240)
        took = time.monotonic() - started
        time.sleep(1)
    truth = stream.truth
    print(f"\nupgrade of {PARTITIONS} partitions on 2 actors took {took:.1f}s")

    after = running.status()
    assert after.state == "running" and after.code == fingerprint(v2).short
    assert {p.code for p in after.partitions} == {fingerprint(v2).short}
    assert not old_actors & {p.actor_name for p in after.partitions}
    assert [p.restarts for p in after.partitions] == [0] * PARTITIONS
    assert all(p.epoch == epochs[p.partition] + 1 for p in after.partitions), "one move each"

    # every click counted once: at-least-once is exact here, because a hand-over commits the
    # old owner's last batch before the new owner reads the committed offsets and the table
    def processed() -> int:
        return sum(p.processed for p in running.status().partitions)

    wait_until(lambda: processed() >= truth.total(), 90, "every click processed")
    time.sleep(1)
    assert processed() == truth.total(), "no message processed twice over the owners"
    view = View(brokers, f"{group}-table", codecs.Json(), config).start()
    try:
        view.wait_ready(60)

        def counts() -> dict[str, dict[str, int]]:
            return {u: v for u, v in view.get_many(list(truth)).items() if v is not None}

        wait_until(lambda: {u: v["n"] for u, v in counts().items()} == dict(truth), 90, "n")
        table = counts()
    finally:
        view.stop()
    by_v1 = sum(v.get("v1", 0) for v in table.values())
    by_v2 = sum(v.get("v2", 0) for v in table.values())
    print(f"clicks {truth.total()}: counted by v1 {by_v1}, by v2 {by_v2}; processed {processed()}")
    assert by_v1 + by_v2 == truth.total() and by_v1 > 0 and by_v2 > 0

    # one writer at a time: in each changelog partition the epochs never go back
    seen: dict[int, list[int]] = {}
    for p, _, _, _, headers in read_records(brokers, f"{group}-table", PARTITIONS):
        seen.setdefault(p, []).append(int(headers["goka-ray.epoch"]))
    assert all(seq == sorted(seq) for seq in seen.values()), seen


def test_changed_code_never_attaches_and_an_upgrade_outlives_a_coordinator_restart(kafka, setup):
    group, topic, processor, _ = setup
    v1, v2 = versioned(group, topic, "v1"), versioned(group, topic, "v2")
    running = processor(v1)
    running.start()
    before = running.wait_ready(120)

    # the same name with another callback: refused, and the group runs on untouched
    other = processor(v2)
    with pytest.raises(CodeChangedError) as refused:
        other.start()
    assert refused.value.changes == (f"Input('{topic}') callback changed",)
    assert "goka-ray run MODULE:GRAPH --upgrade" in str(refused.value)
    assert f"goka-ray stop {group}" in str(refused.value)
    same = running.status()
    assert same.code == fingerprint(v1).short and same.state == "running"
    assert [p.actor_name for p in same.partitions] == [p.actor_name for p in before.partitions]
    processor(v1).start()  # the same code attaches as before

    # an upgrade that would change the table's codec is refused before anything moves
    int_table = versioned(group, topic, "v1", table_codec=codecs.Pickle())
    with pytest.raises(UpgradeError, match="table codec changed"):
        other.upgrade(int_table)
    assert running.status().code == fingerprint(v1).short

    # upgraded through the handle the refused start left attached
    assert other.upgrade(v2, timeout=240)
    assert not other.upgrade(v2), "it runs that code already"
    upgraded = running.wait_ready(60)
    # the coordinator restarts (Ray re-creates it from the spec it was created with, v1):
    # it must go on with the recorded v2, not roll the group back
    coordinator = ray.get_actor(f"goka-ray/{group}/coordinator", namespace=NAMESPACE)
    ray.kill(coordinator, no_restart=False)
    truth, _ = produce_clicks(kafka.bootstrap_servers, topic, 500, 20, seed=7)

    def settled() -> bool:
        try:
            status = running.status()
        except Exception:
            return False
        return status.state == "running" and status.ready

    wait_until(settled, 90, "the restarted coordinator adopting the group")
    after = running.status()
    assert after.code == fingerprint(v2).short
    assert [(p.actor_name, p.epoch) for p in after.partitions] == [
        (p.actor_name, p.epoch) for p in upgraded.partitions
    ], "adopted as they were: no move back to the old code"
    with pytest.raises(CodeChangedError):
        processor(v1).start()
