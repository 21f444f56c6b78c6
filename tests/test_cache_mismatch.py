"""A local table copy that does not belong to its changelog is discarded and rebuilt.

Goka #396/#415: when the changelog topic is deleted and re-created (or the storage directory
comes from another cluster), the offset stored with the local copy points beyond the new
topic's end, or into unrelated records; reading on from it would keep stale values.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from kafka_helpers import Running, clicks_graph, produce, produce_clicks, wait_until

from goka_ray import LevelDBStorage, codecs
from goka_ray.core.storage import partition_dir
from goka_ray.kafka.clients import client_config
from goka_ray.kafka.local_copy import IDENTITY_FILE
from goka_ray.kafka.runner import PartitionRunner
from goka_ray.kafka.topics import TopicManager

INT = codecs.Int()


def table(storage_dir: Path, group: str, topic: str) -> dict[str, int]:
    storage = LevelDBStorage(partition_dir(storage_dir, group, topic, 0))
    try:
        return {k.decode(): INT.decode(v) for k, v in storage.iterate()}
    finally:
        storage.close()


def recreate(brokers: str, topic: str, records: dict[str, int]) -> None:
    """Delete ``topic`` and create it again (compacted, 1 partition) holding ``records``."""
    admin = AdminClient(client_config(brokers))
    admin.delete_topics([topic], operation_timeout=10)[topic].result(15)
    wait_until(lambda: topic not in admin.list_topics(timeout=5).topics, 15, "the deletion")
    with TopicManager(brokers) as topics:
        topics.ensure_table(topic, 1)
    produce(brokers, topic, [(k, INT.encode(v)) for k, v in records.items()])


@pytest.fixture
def counted(kafka, unique, tmp_path):  # type: ignore[no-untyped-def]
    """A group that counted 2000 clicks of 50 users into its table, then stopped."""
    topic, group = f"{unique}-clicks", f"{unique}-counter"
    graph = clicks_graph(group, topic)
    brokers = kafka.bootstrap_servers
    with TopicManager(brokers) as topics:
        topics.ensure_stream(topic, 1)
        topics.ensure_group_topics(graph)
    truth, ends = produce_clicks(brokers, topic, 2_000, 50)
    with Running([PartitionRunner(brokers, graph, 0, storage_dir=tmp_path)]) as running:
        running.wait_for_offsets(topic, ends)
    assert table(tmp_path, group, graph.table_topic) == truth
    return graph


def rebuild(brokers: str, graph, storage_dir: Path) -> int:  # type: ignore[no-untyped-def]
    runner = PartitionRunner(brokers, graph, 0, storage_dir=storage_dir)
    try:
        return runner.recover()
    finally:
        runner.close()


def mismatch_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "does not match its changelog" in r.getMessage()
    ]


def test_a_recreated_changelog_with_fewer_records_replaces_the_local_copy(
    kafka, counted, tmp_path, caplog
):
    graph = counted
    recreate(kafka.bootstrap_servers, graph.table_topic, {"new-a": 7, "new-b": 9})
    with caplog.at_level(logging.WARNING, logger="goka_ray.kafka.local_copy"):
        assert rebuild(kafka.bootstrap_servers, graph, tmp_path) == 2
    assert table(tmp_path, graph.group, graph.table_topic) == {"new-a": 7, "new-b": 9}
    (message,) = mismatch_warnings(caplog)
    assert graph.table_topic in message and "Discarding the local copy (50 keys)" in message
    assert "rebuilding it from the changelog" in message


def test_without_topic_ids_a_stored_offset_beyond_the_end_is_detected(
    kafka, counted, tmp_path, caplog
):
    # as with a broker that reports no topic ids: only the offset check is left
    graph = counted
    (partition_dir(tmp_path, graph.group, graph.table_topic, 0) / IDENTITY_FILE).unlink()
    recreate(kafka.bootstrap_servers, graph.table_topic, {"new-a": 7})
    with caplog.at_level(logging.WARNING, logger="goka_ray.kafka.local_copy"):
        assert rebuild(kafka.bootstrap_servers, graph, tmp_path) == 1
    assert table(tmp_path, graph.group, graph.table_topic) == {"new-a": 7}
    (message,) = mismatch_warnings(caplog)
    assert "beyond the end of" in message


def test_a_recreated_changelog_with_more_records_is_detected_by_its_topic_id(
    kafka, counted, tmp_path, caplog
):
    graph = counted
    bigger = {f"k{i}": i for i in range(3_000)}  # ends beyond the stored offset
    recreate(kafka.bootstrap_servers, graph.table_topic, bigger)
    with caplog.at_level(logging.WARNING, logger="goka_ray.kafka.local_copy"):
        assert rebuild(kafka.bootstrap_servers, graph, tmp_path) == 3_000
    assert table(tmp_path, graph.group, graph.table_topic) == bigger
    (message,) = mismatch_warnings(caplog)
    assert "with id" in message


def test_a_current_local_copy_is_kept(kafka, counted, tmp_path, caplog):
    graph = counted
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="goka_ray.kafka.local_copy"):
        assert rebuild(kafka.bootstrap_servers, graph, tmp_path) == 0
    assert mismatch_warnings(caplog) == []
    assert len(table(tmp_path, graph.group, graph.table_topic)) == 50
    assert time.monotonic() - started < 10
