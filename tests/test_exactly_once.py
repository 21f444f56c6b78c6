"""Exactly-once processing (Kafka transactions) against the local broker.

Tansu (the local broker) commits, aborts and fences transactions, keeps read_committed
consumers below the last stable offset, and commits offsets sent to a transaction only with
it. It does *not* filter the records of aborted transactions out of fetch responses (it sends
no aborted-transaction index), so a read_committed consumer still sees them. The runner
copes for its own table (records carry the input offsets they cover and recovery skips the
aborted ones); for an output stream the tests below tell aborted transactions apart by the
same header where the broker does not (see ``committed_outputs``).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer, TopicPartition
from eos_worker import counting_graph
from kafka_helpers import (
    ClickStream,
    Record,
    latest_values,
    produce,
    read_records,
    read_topic,
    table_contents,
    wait_until,
)

from goka_ray import codecs
from goka_ray.core.partitioner import MURMUR2
from goka_ray.errors import FencedError
from goka_ray.kafka.clients import client_config, make_consumer
from goka_ray.kafka.publish import TXN_HEADER, TXN_ID_HEADER, transactional_id
from goka_ray.kafka.runner import PartitionRunner, RunnerConfig, RunnerState
from goka_ray.kafka.topics import TopicManager

PARTITIONS = 2
INT = codecs.Int()
EOS = RunnerConfig(batch_size=100, processing_guarantee="exactly_once")


@pytest.fixture(scope="module")
def filters_aborted(kafka) -> bool:  # type: ignore[no-untyped-def]
    """Whether the broker keeps aborted records from read_committed consumers (Tansu: no)."""
    topic = f"probe-aborted-{time.monotonic_ns()}"
    with TopicManager(kafka.bootstrap_servers) as topics:
        topics.ensure_stream(topic, 1)
    producer = Producer(client_config(kafka.bootstrap_servers, {"transactional.id": topic}))
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"aborted")
    producer.flush(30)
    producer.abort_transaction(30)
    produce(kafka.bootstrap_servers, topic, [("k", b"committed")])
    values = [v for *_, v, _ in read_records(kafka.bootstrap_servers, topic, 1)]
    return values == [b"committed"]


def committed_outputs(records: list[Record], filters_aborted: bool) -> list[Record]:
    """The records of committed transactions only.

    On a broker that filters aborted transactions, that is every record. Otherwise each
    record names its transaction (:data:`TXN_ID_HEADER`) and the input offsets
    ``first-next`` it consumed (:data:`TXN_HEADER`): of the transactions of one input
    partition that start at the same offset, only the last one committed (after an abort the
    next owner starts again from the last committed offset, where the aborted one started).
    """
    if filters_aborted:
        return records
    last_of: dict[tuple[int, bytes], bytes] = {}  # (input partition, first offset) -> txn id
    for *_, value, headers in sorted(records, key=lambda r: (r[0], r[1])):
        assert value is not None and TXN_HEADER in headers, "every output is transactional"
        first = headers[TXN_HEADER].split(b"=")[1].split(b"-")[0]
        last_of[(int(value.split(b":")[0]), first)] = headers[TXN_ID_HEADER]
    committed = set(last_of.values())
    return [r for r in records if r[4][TXN_ID_HEADER] in committed]


@pytest.fixture
def counter(kafka, unique):  # type: ignore[no-untyped-def]
    topic, output, group = f"{unique}-clicks", f"{unique}-out", f"{unique}-eos"
    graph = counting_graph(group, topic, output)
    with TopicManager(kafka.bootstrap_servers) as topics:
        topics.ensure_stream(topic, PARTITIONS)
        topics.ensure_stream(output, PARTITIONS)
        topics.ensure_group_topics(graph)
    return graph, topic, output


def start_worker(  # type: ignore[no-untyped-def]
    brokers: str, graph, topic: str, output: str, storage: Path, crash: str | None = None
):
    worker = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("eos_worker.py")),
            brokers,
            graph.group,
            topic,
            output,
            str(PARTITIONS),
            str(storage),
            "exactly_once",
            *([crash] if crash else []),
        ],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
    )
    assert worker.stdout is not None and worker.stdout.readline().strip() == b"started"
    return worker


def test_sigkilled_repeatedly_counts_and_emits_every_click_exactly_once(
    kafka, counter, tmp_path, filters_aborted
):
    graph, topic, output = counter
    brokers = kafka.bootstrap_servers
    consumer = make_consumer(brokers, graph.group)
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]

    def committed() -> int:
        return sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10))

    rng = random.Random(7)
    # killed from outside at a random moment, and from inside at the two points that matter:
    # records written but not committed, and committed but not yet written to LevelDB
    crashes = [None, "before-commit:12", None, "after-commit:9", None]
    with ClickStream(brokers, topic, batch=200, users=300) as stream:
        for crash in crashes:
            before = committed()
            worker = start_worker(brokers, graph, topic, output, tmp_path, crash)
            if crash is None:
                wait_until(lambda b=before: committed() > b, 30, "the worker to commit progress")
                time.sleep(rng.uniform(0.05, 0.5))
                os.kill(worker.pid, signal.SIGKILL)
            assert worker.wait(30) == -signal.SIGKILL
    truth: Counter[str] = stream.truth
    assert committed() < truth.total(), "the last kill did not happen mid-stream"

    worker = start_worker(brokers, graph, topic, output, tmp_path)
    try:
        wait_until(lambda: committed() == truth.total(), 60, "every click to be processed")
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    consumer.close()

    # the table holds every count exactly, locally and in its changelog
    assert table_contents(tmp_path, graph.group, graph.table_topic, PARTITIONS) == truth
    changelog = latest_values(read_topic(brokers, graph.table_topic, PARTITIONS))
    assert {k.decode(): INT.decode(v) for k, v in changelog.items()} == truth

    # the output holds one message per click: no click lost, none emitted twice
    records = read_records(brokers, output, PARTITIONS)
    kept = committed_outputs(records, filters_aborted)
    if not filters_aborted:  # the crash before a commit left an aborted transaction behind
        assert len(records) > len(kept)
    emitted = Counter(r[3] for r in kept)
    assert emitted.total() == truth.total()
    assert [v for v, n in emitted.items() if n > 1] == []


def test_a_new_owner_fences_the_old_one(kafka, counter, tmp_path):
    graph, topic, output = counter
    brokers = kafka.bootstrap_servers
    produce(brokers, topic, [("ann", b"click")])
    partition = MURMUR2.partition(b"ann", PARTITIONS)
    old = PartitionRunner(brokers, graph, partition, storage_dir=tmp_path / "old", config=EOS)
    new = PartitionRunner(brokers, graph, partition, storage_dir=tmp_path / "new", config=EOS)
    try:
        old.recover()
        old.start_processing()
        wait_until(lambda: old.run_once() == 1, 30, "the old owner to process the click")
        new.recover()
        new.start_processing()  # init_transactions under the same transactional.id
        produce(brokers, topic, [("ann", b"click")])
        with pytest.raises(FencedError, match=transactional_id(graph.group, partition)):
            wait_until(lambda: old.run_once() == 1, 30, "the old owner to try a batch")
        wait_until(lambda: new.run_once() == 1, 30, "the new owner to process the click")
    finally:
        old.close()
        new.close()
    assert table_contents(tmp_path / "new", graph.group, graph.table_topic, PARTITIONS) == {
        "ann": 2
    }
    outputs = [v for *_, v, _ in read_records(brokers, output, PARTITIONS)]
    assert sorted(outputs) == [f"{partition}:0".encode(), f"{partition}:1".encode()]


def test_a_fenced_runner_stops_without_failing(kafka, counter, tmp_path):
    graph, topic, _ = counter
    brokers = kafka.bootstrap_servers
    old = PartitionRunner(brokers, graph, 0, storage_dir=tmp_path / "old", config=EOS)
    old.recover()
    old.start_processing()
    new = PartitionRunner(brokers, graph, 0, storage_dir=tmp_path / "new", config=EOS)
    new.recover()
    new.start_processing()
    new.close()
    produce(brokers, topic, [(f"k{i}", b"click") for i in range(20)])
    with pytest.raises(FencedError):
        wait_until(lambda: old.run_once() > 0, 30, "a batch")
    old.close()
    assert old.state == RunnerState.STOPPED and old.error is None


def _transactional(brokers: str, name: str) -> Producer:
    producer = Producer(client_config(brokers, {"transactional.id": name}))
    producer.init_transactions(30)
    return producer


def test_recovery_ends_at_the_last_stable_offset_and_after_commit_markers(kafka, counter, tmp_path):
    graph, _, _ = counter
    brokers = kafka.bootstrap_servers
    table = graph.table_topic
    writer = _transactional(brokers, f"{graph.group}-writer")
    writer.begin_transaction()
    for i in range(30):  # several record batches, then a commit marker
        writer.produce(table, key=f"k{i % 10}".encode(), value=INT.encode(i), partition=0)
    writer.flush(30)
    writer.commit_transaction(30)
    writer.begin_transaction()  # left open: read_committed stops before it
    writer.produce(table, key=b"open", value=INT.encode(1), partition=0)
    writer.flush(30)

    runner = PartitionRunner(brokers, graph, 0, storage_dir=tmp_path, config=EOS)
    try:
        started = time.monotonic()
        assert runner.recover() == 30
        assert time.monotonic() - started < 15
    finally:
        runner.close()
    writer.commit_transaction(30)
    runner = PartitionRunner(brokers, graph, 0, storage_dir=tmp_path, config=EOS)
    try:
        assert runner.recover() == 1  # the stored offset sits on a marker: only the new record
        assert runner.recover() == 0
    finally:
        runner.close()
    expected = {f"k{i}": 20 + i for i in range(10)} | {"open": 1}
    assert table_contents(tmp_path, graph.group, table, 1) == expected


def test_recovery_skips_changelog_records_of_aborted_transactions(kafka, counter, tmp_path):
    graph, topic, _ = counter
    brokers = kafka.bootstrap_servers
    table = graph.table_topic
    group_meta = make_consumer(brokers, graph.group)
    writer = _transactional(brokers, transactional_id(graph.group, 0))

    def batch(values: dict[str, int], span: str, commit: bool, next_offset: int) -> None:
        writer.begin_transaction()
        for key, value in values.items():
            headers = [(TXN_HEADER, f"{topic}={span}".encode())]
            writer.produce(
                table, key=key.encode(), value=INT.encode(value), partition=0, headers=headers
            )
        writer.flush(30)
        offsets = [TopicPartition(topic, 0, next_offset)]
        writer.send_offsets_to_transaction(offsets, group_meta.consumer_group_metadata(), 30)
        if commit:
            writer.commit_transaction(30)
        else:
            writer.abort_transaction(30)

    batch({"a": 1, "b": 1}, "0-2", True, 2)
    batch({"a": 2, "c": 1}, "2-4", False, 4)  # aborted: must not reach the table
    batch({"b": 2}, "2-3", True, 3)  # the redo, a shorter batch
    group_meta.close()
    runner = PartitionRunner(brokers, graph, 0, storage_dir=tmp_path, config=EOS)
    try:
        runner.recover()
    finally:
        runner.close()
    assert table_contents(tmp_path, graph.group, table, 1) == {"a": 1, "b": 2}
