"""The ChangelogFollower against the local broker, and the table's update-error policy.

One follower serves runners (own table, joins, lookups), standbys and view actors; these tests
pin down what they all rely on: where a changelog ends, what a second pass reads, reloads of a
stale copy, and what a raising update callback does.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest
from confluent_kafka import TopicPartition
from kafka_helpers import produce, read_topic

from goka_ray import ProcessingError, codecs
from goka_ray.core.storage import MemoryStorage, WriteBatch
from goka_ray.core.tables import ChangelogRecord, TablePartition, UpdateContext, UpdateStorage
from goka_ray.kafka.changelog import ChangelogFollower, FollowerState
from goka_ray.kafka.topics import TopicManager

INT = codecs.Int()


@pytest.fixture
def changelog(kafka, unique):  # type: ignore[no-untyped-def]
    topic = f"{unique}-table"
    with TopicManager(kafka.bootstrap_servers) as topics:
        topics.ensure_table(topic, 1)
    return topic


def follower_of(brokers: str, table: TablePartition, **options: object) -> ChangelogFollower:
    follower = ChangelogFollower(brokers, group_id=f"{table.topic}-reader", **options)  # type: ignore[arg-type]
    follower.add(table)
    return follower


def test_an_empty_changelog_is_recovered_without_waiting_for_a_fetch(kafka, changelog):
    # a fetch of an empty partition is held for fetch.wait.max.ms; before, recovery waited for
    # its answer (partition EOF or a high watermark), and a broker that never answered it left
    # recovery hanging for socket.timeout.ms (60 s). ListOffsets says "empty" at once.
    table = TablePartition(changelog, 0, MemoryStorage(), INT)
    slow = {"fetch.wait.max.ms": 60000, "socket.timeout.ms": 120000}
    follower = follower_of(kafka.bootstrap_servers, table, consumer_config=slow)
    done = threading.Event()
    try:
        thread = threading.Thread(target=lambda: (follower.recover(), done.set()), daemon=True)
        thread.start()
        thread.join(50)  # well below the fetch's 60 s: no answer to it was needed
        assert done.is_set()
        assert follower.caught_up and follower.state == FollowerState.RUNNING
        consumer = follower._consumer
        assert consumer is not None
        _, high = consumer.get_watermark_offsets(TopicPartition(changelog, 0), cached=True)
        assert high < 0  # no fetch response arrived: the end came from ListOffsets
    finally:
        follower.close()
    assert table.offset is None and len(table) == 0


def test_an_empty_changelog_is_recovered_without_waiting_for_the_poll_timeout(kafka, changelog):
    # ListOffsets says every log is empty at the copy's end: recovery returns at once, not
    # after a poll that waits for records that cannot come. A group's start recovers twice
    # (before and after its go), so a new group waited two poll timeouts (2 x 0.2 s) per
    # partition before its first batch.
    table = TablePartition(changelog, 0, MemoryStorage(), INT)
    slow = {"fetch.wait.max.ms": 60000, "socket.timeout.ms": 120000}  # fetches held 60 s
    follower = follower_of(kafka.bootstrap_servers, table, consumer_config=slow, poll_timeout=60.0)
    done = threading.Event()

    def recover_twice() -> None:
        follower.recover()
        follower.recover()  # the catch-up after a hand-over's go
        done.set()

    try:
        thread = threading.Thread(target=recover_twice, daemon=True)
        thread.start()
        thread.join(50)  # below one poll timeout (and one held fetch) of 60 s
        assert done.is_set()
        assert follower.caught_up and follower.state == FollowerState.RUNNING
    finally:
        follower.close()


def test_a_second_pass_reads_the_tail_written_meanwhile(kafka, changelog):
    brokers = kafka.bootstrap_servers
    table = TablePartition(changelog, 0, MemoryStorage(), INT)
    follower = follower_of(brokers, table)
    try:
        produce(brokers, changelog, [(f"k{i % 7}", INT.encode(i)) for i in range(30)])
        assert follower.recover() == 30
        # a tail in one go: several record batches, where ListOffsets under-reports the end
        ends = produce(brokers, changelog, [(f"k{i % 7}", INT.encode(100 + i)) for i in range(25)])
        assert follower.recover() == 25
        assert follower.recover() == 0
    finally:
        follower.close()
    assert table.offset == ends[0] == 55
    expected = {f"k{i % 7}": 100 + i for i in range(25)}
    assert {k.decode(): INT.decode(v) for k, v in table.storage.iterate()} == expected


def test_a_copy_beyond_the_end_of_its_changelog_is_reloaded_in_place(kafka, changelog, caplog):
    brokers = kafka.bootstrap_servers
    produce(brokers, changelog, [("a", INT.encode(1)), ("b", INT.encode(2))])
    storage = MemoryStorage()
    stale = WriteBatch()
    stale.set(b"gone", INT.encode(9))
    stale.offset = 40  # as if built from an older topic of the same name with more records
    storage.write(stale)
    table = TablePartition(changelog, 0, storage, INT)
    follower = follower_of(brokers, table)
    with caplog.at_level(logging.WARNING, "goka_ray.kafka.changelog"):
        try:
            follower.recover()
        finally:
            follower.close()
    assert follower.reloads == 1
    assert "beyond the changelog's high watermark" in caplog.text
    assert {k.decode(): INT.decode(v) for k, v in storage.iterate()} == {"a": 1, "b": 2}
    assert table.offset == 2


def test_a_reload_aside_serves_the_old_copy_until_the_new_one_caught_up(kafka, changelog):
    brokers = kafka.bootstrap_servers
    produce(brokers, changelog, [("a", INT.encode(1))])
    old = MemoryStorage()
    stale = WriteBatch()
    stale.set(b"old", INT.encode(7))
    stale.offset = 40
    old.write(stale)
    table = TablePartition(changelog, 0, old, INT)
    fresh: list[MemoryStorage] = []

    def new_storage(_: TablePartition) -> MemoryStorage:
        fresh.append(MemoryStorage())
        return fresh[-1]

    follower = follower_of(brokers, table, fresh_storage=new_storage)
    try:
        follower.recover()
    finally:
        follower.close()
    assert len(fresh) == 1 and table.storage is fresh[0]
    assert dict(table.storage.iterate()) == {b"a": INT.encode(1)}


def test_records_read_again_after_a_reassignment_are_not_applied_twice(kafka, changelog):
    brokers = kafka.bootstrap_servers
    counted: list[int] = []

    def count(ctx: UpdateContext, storage: UpdateStorage, key: str, value: bytes | None) -> None:
        counted.append(ctx.offset)
        if value is not None:
            storage.set(key, value)

    produce(brokers, changelog, [(f"k{i}", INT.encode(i)) for i in range(10)])
    table = TablePartition(changelog, 0, MemoryStorage(), INT, update=count)
    follower = follower_of(brokers, table)
    try:
        follower.recover()
        follower.recover()  # a new pass assigns again from the stored offset
        produce(brokers, changelog, [("k0", INT.encode(100))])
        follower.recover()
    finally:
        follower.close()
    assert counted == list(range(11))
    assert len(read_topic(brokers, changelog, 1)) == 11


def raising_update(
    ctx: UpdateContext, storage: UpdateStorage, key: str, value: bytes | None
) -> None:
    if key == "bad":
        raise ValueError("cannot store this one")
    if value is not None:
        storage.set(key, value)


def test_a_raising_update_callback_fails_the_batch_or_skips_the_record() -> None:
    records = [
        ChangelogRecord(b"a", INT.encode(1), 0),
        ChangelogRecord(b"bad", INT.encode(2), 1),
        ChangelogRecord(b"c", INT.encode(3), 2),
    ]
    failing = TablePartition("t-table", 0, MemoryStorage(), INT, update=raising_update, group="g")
    with pytest.raises(ProcessingError, match=r"t-table\[0\]@1 key='bad'.*cannot store"):
        failing.apply_changelog(records, 3)
    assert failing.offset is None and len(failing) == 0  # nothing of the batch was written

    skipping = TablePartition("t-table", 0, MemoryStorage(), INT, update=raising_update)
    assert skipping.apply_changelog(records, 3, on_update_error="skip") == 2
    assert dict(skipping.storage.iterate()) == {b"a": INT.encode(1), b"c": INT.encode(3)}
    assert skipping.offset == 3


def test_a_follower_of_nothing_waits_its_timeout_instead_of_spinning() -> None:
    # a standby of a group without a table follows no changelog; its wait for promotion is a
    # loop of polls, which returned at once and kept a core busy (45% of one each)
    follower = ChangelogFollower("127.0.0.1:1", group_id="follows-nothing")  # never contacted
    polls = 0
    started = time.monotonic()
    while time.monotonic() - started < 1.0:
        assert follower.poll(0.2) == 0
        polls += 1
    assert polls <= 6, f"{polls} polls in 1 s: the loop spins"
    assert follower.poll(0) == 0  # a zero timeout still returns at once
