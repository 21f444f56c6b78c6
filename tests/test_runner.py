"""PartitionRunner against the real local broker and real LevelDB."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from kafka_helpers import (
    Running,
    clicks_graph,
    latest_values,
    produce,
    produce_clicks,
    read_topic,
    runners_for,
    table_contents,
    wait_until,
)

from goka_ray import (
    Context,
    Input,
    Join,
    Lookup,
    Loop,
    Output,
    Persist,
    ProcessingError,
    codecs,
    define_group,
)
from goka_ray.core.partitioner import MURMUR2
from goka_ray.kafka.clients import make_consumer
from goka_ray.kafka.runner import PartitionRunner, RunnerConfig, RunnerState
from goka_ray.kafka.topics import TopicManager

PARTITIONS = 4
INT = codecs.Int()


def decoded(values: dict[bytes, bytes]) -> dict[str, int]:
    return {k.decode(): INT.decode(v) for k, v in values.items()}


@pytest.fixture
def clicks(kafka, unique):  # type: ignore[no-untyped-def]
    topic, group = f"{unique}-clicks", f"{unique}-counter"
    graph = clicks_graph(group, topic)
    with TopicManager(kafka.bootstrap_servers) as topics:
        topics.ensure_stream(topic, PARTITIONS)
        topics.ensure_group_topics(graph)
    return graph, topic


def test_counts_of_20000_clicks_on_4_partitions_equal_the_truth(kafka, clicks, tmp_path):
    graph, topic = clicks
    brokers = kafka.bootstrap_servers
    truth, ends = produce_clicks(brokers, topic, 20_000, 500)

    with Running(runners_for(brokers, graph, range(PARTITIONS), tmp_path)) as running:
        running.wait_for_offsets(topic, ends)
        statuses = [r.status() for r in running.runners]

    assert sum(s.processed for s in statuses) == 20_000
    assert sum(s.keys for s in statuses) == len(truth)
    assert table_contents(tmp_path, graph.group, graph.table_topic, PARTITIONS) == truth
    changelog = read_topic(brokers, graph.table_topic, PARTITIONS)
    # the changelog converges to the table, and every key sits on its murmur2 partition
    assert decoded(latest_values(changelog)) == truth
    assert all(p == MURMUR2.partition(k, PARTITIONS) for p, _, k, _ in changelog if k)
    # writes are coalesced per batch: far fewer changelog records than messages
    assert len(changelog) < 20_000 // 2


def test_restart_recovers_only_the_changelog_tail(kafka, clicks, tmp_path):
    graph, topic = clicks
    brokers = kafka.bootstrap_servers
    truth1, ends = produce_clicks(brokers, topic, 5_000, 200, seed=1)
    with Running(runners_for(brokers, graph, range(PARTITIONS), tmp_path)) as running:
        running.wait_for_offsets(topic, ends)
    snapshot = tmp_path.parent / f"{tmp_path.name}-snapshot"
    shutil.copytree(tmp_path, snapshot)
    records_before = len(read_topic(brokers, graph.table_topic, PARTITIONS))

    truth2, ends = produce_clicks(brokers, topic, 5_000, 200, seed=2)
    with Running(runners_for(brokers, graph, range(PARTITIONS), tmp_path)) as running:
        running.wait_for_offsets(topic, ends)
        assert sum(r.status().recovered for r in running.runners) == 0  # local copy is current
    tail = len(read_topic(brokers, graph.table_topic, PARTITIONS)) - records_before
    assert tail > 0

    # an older local copy (as after a crash) replays only what the changelog has beyond it
    shutil.rmtree(tmp_path)
    shutil.move(snapshot, tmp_path)
    with Running(runners_for(brokers, graph, range(PARTITIONS), tmp_path)) as running:
        running.wait_for_offsets(topic, ends)
        assert sum(r.status().recovered for r in running.runners) == tail
    assert table_contents(tmp_path, graph.group, graph.table_topic, PARTITIONS) == truth1 + truth2


def test_a_runner_reports_recovered_then_running_and_survives_a_failing_report(
    kafka, clicks, tmp_path
):
    """``run(go, on_state)`` reports ``recovered`` once, before it waits for ``go``, and
    ``running`` once it processes; a report that raises is logged and the runner goes on (the
    coordinator's next tick finds the state all the same)."""
    graph, topic = clicks
    brokers = kafka.bootstrap_servers
    truth, ends = produce_clicks(brokers, topic, 400, 40)
    runners = runners_for(brokers, graph, range(PARTITIONS), tmp_path)
    go = threading.Event()
    reports: list[tuple[int, RunnerState]] = []

    def report(partition: int, state: RunnerState) -> None:
        reports.append((partition, state))
        if partition == 0:
            raise RuntimeError("the coordinator is gone")

    threads = [
        threading.Thread(
            target=r.run, args=(go, lambda s, p=r.partition: report(p, s)), daemon=True
        )
        for r in runners
    ]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(reports) == PARTITIONS, 60, "every runner to report")
        time.sleep(0.5)  # waiting for go: no second report, nothing processed
        assert sorted(reports) == [(p, RunnerState.RECOVERED) for p in range(PARTITIONS)]
        assert sum(r.status().processed for r in runners) == 0
        go.set()
        wait_until(
            lambda: all(
                r.status().offsets.get(topic, 0) >= ends.get(r.partition, 0) for r in runners
            ),
            60,
            "every runner to process its clicks",
        )
    finally:
        for r in runners:
            r.stop()
        for t in threads:
            t.join(30)
    expected = [
        (p, s) for p in range(PARTITIONS) for s in (RunnerState.RECOVERED, RunnerState.RUNNING)
    ]
    assert sorted(reports, key=lambda r: (r[0], r[1] != RunnerState.RECOVERED)) == expected
    assert table_contents(tmp_path, graph.group, graph.table_topic, PARTITIONS) == truth


def test_deleted_storage_is_rebuilt_from_the_changelog(kafka, clicks, tmp_path):
    graph, topic = clicks
    brokers = kafka.bootstrap_servers
    truth, ends = produce_clicks(brokers, topic, 4_000, 300)
    with Running(runners_for(brokers, graph, range(PARTITIONS), tmp_path)) as running:
        running.wait_for_offsets(topic, ends)
    changelog_records = len(read_topic(brokers, graph.table_topic, PARTITIONS))

    shutil.rmtree(tmp_path)
    more, ends = produce_clicks(brokers, topic, 1_000, 300, seed=9)
    with Running(runners_for(brokers, graph, range(PARTITIONS), tmp_path)) as running:
        running.wait_for_offsets(topic, ends)
        assert sum(r.status().recovered for r in running.runners) == changelog_records
    assert table_contents(tmp_path, graph.group, graph.table_topic, PARTITIONS) == truth + more


def test_sigkill_mid_stream_loses_no_update(kafka, clicks, tmp_path):
    graph, topic = clicks
    brokers = kafka.bootstrap_servers
    truth, ends = produce_clicks(brokers, topic, 20_000, 500)
    worker = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("crash_worker.py")),
            brokers,
            graph.group,
            topic,
            str(PARTITIONS),
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
    )
    assert worker.stdout is not None and worker.stdout.readline().strip() == b"started"
    consumer = make_consumer(brokers, graph.group)
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]

    def committed() -> int:
        return sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10))

    wait_until(lambda: committed() > 2_000, 60, "the worker to commit some progress")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(30)
    done_at_kill = committed()
    consumer.close()
    assert done_at_kill < 20_000, "the worker finished before it was killed: not mid-stream"

    config = RunnerConfig(batch_size=100)
    with Running(runners_for(brokers, graph, range(PARTITIONS), tmp_path, config)) as running:
        running.wait_for_offsets(topic, ends)
    counts = table_contents(tmp_path, graph.group, graph.table_topic, PARTITIONS)
    assert set(counts) == set(truth)
    short = {u: (counts[u], n) for u, n in truth.items() if counts[u] < n}
    assert not short, f"updates lost: {short}"
    # at-least-once: only messages in flight at the kill (< one batch per partition) repeat
    assert sum(counts.values()) - truth.total() <= 100 * PARTITIONS
    assert decoded(latest_values(read_topic(brokers, graph.table_topic, PARTITIONS))) == counts


def test_last_record_of_a_multi_record_changelog_batch_is_recovered(kafka, unique, tmp_path):
    brokers = kafka.bootstrap_servers
    topic, group = f"{unique}-in", f"{unique}-g"
    graph = clicks_graph(group, topic)
    with TopicManager(brokers) as topics:
        topics.ensure_stream(topic, 1)
        topics.ensure_group_topics(graph)
    # 30 records produced in one go land in a few multi-record batches; a recovery that
    # trusts an under-reported high watermark would miss the newest ones
    items = [(f"k{i % 10}", INT.encode(i)) for i in range(30)]
    produce(brokers, graph.table_topic, items)
    runner = PartitionRunner(brokers, graph, 0, storage_dir=tmp_path)
    try:
        assert runner.recover() == 30
    finally:
        runner.close()
    assert table_contents(tmp_path, group, graph.table_topic, 1) == {
        f"k{i}": 20 + i for i in range(10)
    }


def test_joins_lookups_loopback_and_outputs_end_to_end(kafka, unique, tmp_path):
    brokers = kafka.bootstrap_servers
    orders, profiles, prices, out = (
        f"{unique}-{n}" for n in ("orders", "profiles", "prices", "out")
    )
    group = f"{unique}-shop"
    json_codec = codecs.Json()

    def on_order(ctx: Context, order: dict) -> None:
        profile = ctx.join(profiles)
        price = ctx.lookup(prices, order["item"])
        ctx.emit(
            out,
            ctx.key,
            {"name": profile["name"], "item": order["item"], "price": price},
            headers={"source": "shop"},
        )
        ctx.loopback(order["item"], 1)

    def on_loop(ctx: Context, n: int) -> None:
        ctx.set_value((ctx.value() or 0) + n)

    graph = define_group(
        group,
        Input(orders, json_codec, on_order),
        Join(profiles, json_codec),
        Lookup(prices, INT),
        Loop(INT, on_loop),
        Output(out, json_codec),
        Persist(INT),
    )
    with TopicManager(brokers) as topics:
        topics.ensure_stream(orders, 2)
        topics.ensure_table(profiles, 2)
        topics.ensure_table(prices, 3)  # lookups need no co-partitioning
        topics.ensure_stream(out, 2)
        topics.ensure_group_topics(graph)
    produce(
        brokers, profiles, [(u, json_codec.encode({"name": u.upper()})) for u in ("ann", "bob")]
    )
    produce(brokers, prices, [("apple", INT.encode(3)), ("pear", INT.encode(5))])
    ends = produce(
        brokers,
        orders,
        [
            ("ann", json_codec.encode({"item": "apple"})),
            ("bob", json_codec.encode({"item": "pear"})),
            ("ann", json_codec.encode({"item": "pear"})),
        ],
    )
    runners = runners_for(brokers, graph, range(2), tmp_path)
    with Running(runners) as running:
        running.wait_for_offsets(orders, ends)
        wait_until(lambda: sum(r.status().keys for r in runners) == 2, 30, "loopback counts")
        # joined tables stay current while the group runs
        produce(brokers, profiles, [("bob", json_codec.encode({"name": "ROBERT"}))])
        time.sleep(1.0)
        ends = produce(brokers, orders, [("bob", json_codec.encode({"item": "apple"}))])
        running.wait_for_offsets(orders, ends)
        wait_until(lambda: len(read_topic(brokers, out, 2)) == 4, 30, "four outputs")

    emitted = sorted(
        (json_codec.decode(v)["name"], json_codec.decode(v)["item"], json_codec.decode(v)["price"])
        for _, _, _, v in read_topic(brokers, out, 2)
    )
    assert emitted == [
        ("ANN", "apple", 3),
        ("ANN", "pear", 5),
        ("BOB", "pear", 5),
        ("ROBERT", "apple", 3),
    ]
    assert table_contents(tmp_path, group, graph.table_topic, 2) == {"apple": 2, "pear": 2}


def _policy_group(kafka, unique, policy: str):  # type: ignore[no-untyped-def]
    topic, group = f"{unique}-nums", f"{unique}-sum-{policy}"

    def add(ctx: Context, n: int) -> None:
        ctx.set_value((ctx.value() or 0) + n)

    graph = define_group(group, Input(topic, INT, add, on_decode_error=policy), Persist(INT))
    with TopicManager(kafka.bootstrap_servers) as topics:
        topics.ensure_stream(topic, 1)
        topics.ensure_group_topics(graph)
    ends = produce(
        kafka.bootstrap_servers,
        topic,
        [
            ("a", INT.encode(1)),
            ("a", b"bad"),
            ("a", INT.encode(2)),
        ],
    )
    return graph, topic, ends


def test_skip_policy_counts_and_skips_undecodable_messages(kafka, unique, tmp_path):
    graph, topic, ends = _policy_group(kafka, unique, "skip")
    runner = PartitionRunner(kafka.bootstrap_servers, graph, 0, storage_dir=tmp_path)
    with Running([runner]) as running:
        running.wait_for_offsets(topic, ends)
        status = runner.status()
    assert (status.processed, status.skipped) == (2, 1)
    assert table_contents(tmp_path, graph.group, graph.table_topic, 1) == {"a": 3}


def test_dead_letter_policy_forwards_the_raw_message(kafka, unique, tmp_path):
    graph, topic, ends = _policy_group(kafka, unique, "dead_letter")
    brokers = kafka.bootstrap_servers
    runner = PartitionRunner(brokers, graph, 0, storage_dir=tmp_path)
    with Running([runner]) as running:
        running.wait_for_offsets(topic, ends)
        assert runner.status().dead_lettered == 1
    dlq = read_topic(brokers, graph.dead_letter_topic, 1)
    assert [(k, v) for _, _, k, v in dlq] == [(b"a", b"bad")]
    consumer = make_consumer(brokers, f"{graph.group}-check")
    consumer.assign([TopicPartition(graph.dead_letter_topic, 0, 0)])
    msg = consumer.consume(1, timeout=10)[0]
    headers = dict(msg.headers())
    consumer.close()
    assert headers["goka-ray.topic"] == topic.encode() and headers["goka-ray.offset"] == b"1"
    assert b"Int" in headers["goka-ray.error"]
    assert table_contents(tmp_path, graph.group, graph.table_topic, 1) == {"a": 3}


def test_fail_policy_stops_at_the_bad_message_and_commits_before_it(kafka, unique, tmp_path):
    graph, topic, _ = _policy_group(kafka, unique, "fail")
    brokers = kafka.bootstrap_servers
    runner = PartitionRunner(brokers, graph, 0, storage_dir=tmp_path)
    with pytest.raises(ProcessingError) as info:
        runner.run()
    err = info.value
    assert (err.topic, err.partition, err.offset, err.key) == (topic, 0, 1, "a")
    assert runner.state == RunnerState.FAILED and "Int codec" in str(runner.error)
    consumer = make_consumer(brokers, graph.group)
    assert consumer.committed([TopicPartition(topic, 0)], timeout=10)[0].offset == 1
    consumer.close()
    assert table_contents(tmp_path, graph.group, graph.table_topic, 1) == {"a": 1}


def test_callback_error_fails_the_runner_with_message_coordinates(kafka, unique, tmp_path):
    topic, group = f"{unique}-in", f"{unique}-boom"

    def explode(ctx: Context, msg: str) -> None:
        if msg == "boom":
            raise ValueError("cannot handle boom")
        ctx.set_value(msg)

    graph = define_group(group, Input(topic, codecs.String(), explode), Persist(codecs.String()))
    brokers = kafka.bootstrap_servers
    with TopicManager(brokers) as topics:
        topics.ensure_stream(topic, 1)
        topics.ensure_group_topics(graph)
    produce(brokers, topic, [("k1", b"ok"), ("k2", b"boom"), ("k3", b"never")])
    runner = PartitionRunner(brokers, graph, 0, storage_dir=tmp_path)
    with pytest.raises(ProcessingError) as info:
        runner.run()
    assert (info.value.offset, info.value.key) == (1, "k2")
    assert isinstance(info.value.error, ValueError)
    status = runner.status()
    assert status.state == RunnerState.FAILED and "cannot handle boom" in (status.error or "")
    assert json.dumps(status.offsets) == json.dumps({topic: 1})
