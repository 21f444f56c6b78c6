"""Goka view features: ordered paged iteration, view state and observers, reconnect after a
broker outage (real local broker, real local Ray)."""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import kafka_helpers
import pytest
import ray
from kafka_helpers import produce

from goka_ray import codecs
from goka_ray.core.key_index import KeyIndex
from goka_ray.core.keys import decode_key, encode_key
from goka_ray.core.storage import MemoryStorage, WriteBatch
from goka_ray.core.tables import UpdateCallback
from goka_ray.core.views import TableView
from goka_ray.errors import GokaRayError
from goka_ray.kafka.changelog import offset_reset_reason
from goka_ray.kafka.clients import make_producer
from goka_ray.kafka.local_view import LocalView
from goka_ray.kafka.topics import TopicManager
from goka_ray.ray.view import View
from goka_ray.tools.local import LocalKafka

cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(kafka_helpers)

NAMESPACE = "goka-ray-view-tests"
INT = codecs.Int()
RANK = {s: i for i, s in enumerate(("idle", "connecting", "recovering", "running"))}


#: the view kinds every view test runs against: actor-served, in-process (memory, LevelDB)
MODES = ["actors", "memory", "leveldb"]


@pytest.fixture(params=MODES)
def views(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., TableView]]:
    """Makes views of one kind (stopped after the test); ``start()`` is left to the test."""
    mode = request.param
    if mode == "actors":
        request.getfixturevalue("ray_local")
    made: list[View | LocalView] = []

    def make(
        brokers: str, table: str, replicas: int = 1, update: UpdateCallback | None = None
    ) -> View | LocalView:
        view: View | LocalView
        if mode == "actors":
            config = {"namespace": NAMESPACE, "views": {table: {"replicas": replicas}}}
            view = View(brokers, table, INT, config, update=update)
        else:
            storage = "memory" if mode == "memory" else "leveldb"
            view = LocalView(
                brokers, table, INT, storage=storage, storage_dir=tmp_path, update=update
            )
        made.append(view)
        return view

    yield make
    for view in made:
        view.stop()


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def make_table(brokers: str, table: str, partitions: int) -> None:
    with TopicManager(brokers) as topics:
        topics.ensure_table(table, partitions)


# -- pure parts: no broker, no Ray -----------------------------------------------------------


def _write(storage: MemoryStorage, index: KeyIndex, writes: dict[bytes, bytes | None]) -> None:
    for key, value in writes.items():
        index.note(key, storage.has(key), value is not None)
    batch = WriteBatch()
    batch.writes.update(writes)
    storage.write(batch)


def test_key_index_pages_follow_inserts_and_deletes() -> None:
    storage, index = MemoryStorage(), KeyIndex()
    _write(storage, index, {b"b": b"1", b"d": b"2"})
    assert list(index.page(storage, None, None, 10)) == [(b"b", b"1"), (b"d", b"2")]
    # after the first read, writes are patched into the sorted list
    _write(storage, index, {b"a": b"0", b"c": b"3", b"d": None, b"b\x00": b"4"})
    assert [k for k, _ in index.page(storage, None, None, 10)] == [b"a", b"b", b"b\x00", b"c"]
    assert [k for k, _ in index.page(storage, b"b", b"c", 10)] == [b"b", b"b\x00"]
    assert [k for k, _ in index.page(storage, b"b\x00", None, 2)] == [b"b\x00", b"c"]
    _write(storage, index, {b"d": b"5"})  # deleted, then written again: listed once
    assert [k for k, _ in index.page(storage, b"c", None, 10)] == [b"c", b"d"]
    # many writes at once: rebuilt from the storage instead of patched
    _write(storage, index, {f"k{i:05d}".encode(): b"x" for i in range(3000)})
    keys = [k for k, _ in index.page(storage, None, None, 10_000)]
    assert keys == sorted(k for k, _ in storage.iterate())
    assert len(keys) == 3005


def test_offset_reset_reason_detects_recreated_and_truncated_changelogs() -> None:
    assert offset_reset_reason(None, 0, 5) is None  # nothing read yet
    assert offset_reset_reason(20, 0, -1) is None  # no fetch response yet
    assert offset_reset_reason(20, 0, 20) is None  # caught up
    assert offset_reset_reason(12, 0, 20) is None  # behind
    beyond = offset_reset_reason(20, 0, 4)  # a restarted memory-only broker
    assert beyond is not None and "beyond the changelog's high watermark 4" in beyond
    below = offset_reset_reason(3, 10, 20)
    assert below is not None and "below the changelog's start offset 10" in below


# -- on the broker and Ray -------------------------------------------------------------------


def test_iterator_pages_in_key_order_with_ranges(
    kafka: LocalKafka, unique: str, views: Callable[..., View | LocalView]
) -> None:
    brokers = kafka.bootstrap_servers
    table = f"{unique}-table"
    make_table(brokers, table, 4)
    edge = ["k", "k\x00", "k\x00\x00", "ka", "é", "z", "Z"]
    records: list[tuple[str, bytes | None]] = [(f"key-{i:04d}", INT.encode(i)) for i in range(600)]
    records += [(k, INT.encode(1000 + i)) for i, k in enumerate(edge)]
    records += [("key-0001", INT.encode(-1))]  # overwritten: the last value wins
    records += [(f"key-{i:04d}", None) for i in range(500, 550)]  # tombstones
    produce(brokers, table, records)
    truth: dict[str, int] = {}
    for key, raw in records:
        if raw is None:
            truth.pop(key, None)
        else:
            truth[key] = INT.decode(raw)
    ordered = sorted(truth.items(), key=lambda kv: kv[0].encode())

    view = views(brokers, table, replicas=2).start()
    if isinstance(view, View):
        assert len(view._actors) == 2  # pages of two actors are merged
    assert view.wait_for("running", 60) == "running"
    wait_until(lambda: len(view) == len(truth), 30, "every key in the view")

    assert list(view.iterator(page_size=7)) == ordered
    assert list(view.items()) == ordered
    in_range = [kv for kv in ordered if "key-0100" <= kv[0] < "key-0200"]
    assert list(view.iterator("key-0100", "key-0200", page_size=9)) == in_range
    assert in_range[0][0] == "key-0100" and in_range[-1][0] == "key-0199"
    # keys that differ only by trailing NUL bytes, one per page
    assert [k for k, _ in view.iterator("k", "k\x00\x00", page_size=1)] == ["k", "k\x00"]
    assert [k for k, _ in view.iterator(start="z")] == ["z", "é"]  # UTF-8 byte order
    head = ["Z", "k", "k\x00", "k\x00\x00", "ka", "key-0000", "key-0001"]
    assert [k for k, _ in view.iterator(end="key-0002")] == head
    assert list(view.iterator("m", "m")) == []
    assert dict(view.iterator("key-0001", "key-0002")) == {"key-0001": -1}

    with pytest.raises(GokaRayError, match="page size"):
        next(view.iterator(page_size=0))
    if not isinstance(view, View):
        return
    # one actor call returns one bounded page, in key order, and says whether more follow
    pairs, more = ray.get(view._actors[0].page.remote(None, None, 10))
    assert len(pairs) == 10 and more
    assert [k for k, _ in pairs] == sorted(k for k, _ in pairs)
    first, more = ray.get(view._actors[0].page.remote(None, None, 1000, 1))  # max_bytes
    assert len(first) == 1 and more and first[0] == pairs[0]
    rest, more = ray.get(view._actors[0].page.remote(b"z", None, 1000))
    assert not more


def test_keys_that_are_not_utf8_are_read_by_bytes_or_text_and_iterate_losslessly(
    kafka: LocalKafka, unique: str, views: Callable[..., View | LocalView]
) -> None:
    brokers = kafka.bootstrap_servers
    table = f"{unique}-table"
    make_table(brokers, table, 2)
    mac = b"\x00\x85mac"  # written by a Goka service sharing the changelog
    truth = {mac: 7, "ünï".encode(): 2, b"\xff": 3, b"bob": 4}
    producer = make_producer(brokers)
    for key, value in truth.items():
        producer.produce(table, key=key, value=INT.encode(value))
    assert producer.flush(30) == 0

    view = views(brokers, table, replicas=2).start()
    view.wait_for("running", 60)
    wait_until(lambda: len(view) == len(truth), 30, "every key in the view")
    assert view.get(mac) == 7 and view.get("\x00\udc85mac") == 7
    assert view.has(b"\xff") and not view.has(b"\xfe")
    assert view.get_many([mac, "ünï", b"nobody"]) == {mac: 7, "ünï": 2, b"nobody": None}
    items = list(view.iterator())
    assert {encode_key(k): v for k, v in items} == truth  # every key round-trips
    assert [k for k, _ in items] == [decode_key(k) for k in sorted(truth)]
    assert list(view.iterator(start=b"\x00", end=b"\x01")) == [("\x00\udc85mac", 7)]
    assert list(view.iterator(start="\udcff")) == [("\udcff", 3)]
    with pytest.raises(GokaRayError, match="a key must be str or bytes, not int"):
        view.get(5)  # type: ignore[arg-type]


def test_state_wait_for_and_observer(
    kafka: LocalKafka, unique: str, views: Callable[..., View | LocalView]
) -> None:
    brokers = kafka.bootstrap_servers
    table = f"{unique}-table"
    make_table(brokers, table, 2)
    ends = produce(brokers, table, ((f"user-{i % 300}", INT.encode(i)) for i in range(3000)))

    view = views(brokers, table)
    assert view.state == "idle"
    with pytest.raises(GokaRayError, match="unknown view state"):
        view.wait_for("ready", 1)
    events: list[tuple[str, str]] = []
    observer = view.observe(lambda old, new: events.append((old, new)), interval=0.05)
    view.start()
    assert view.wait_for("connecting", 60) in ("connecting", "recovering", "running")
    assert view.wait_for("running", 60) == "running"
    assert view.state == "running"
    wait_until(lambda: events and events[-1][1] == "running", 10, "the observer to see running")
    observer.stop()
    assert not observer.running
    assert events[0][0] == "idle"
    for (_, new), (old, _) in itertools.pairwise(events):
        assert old == new  # consecutive observed states
    assert all(RANK[new] > RANK[old] for old, new in events), events  # no step back

    [status] = view.status()
    assert status.state == "running" and status.error is None and status.reconnects == 0
    assert status.offsets == ends  # read exactly to the end of each partition
    assert status.keys == 300
    seen = len(events)
    view.stop()
    assert view.state == "idle"
    assert len(events) == seen  # a stopped observer calls nothing more


def test_view_reconnects_after_broker_restart_and_reloads_the_recreated_changelog(
    views: Callable[..., View | LocalView],
) -> None:
    table = "outage-table"
    old = {f"old-{i}": i for i in range(40)}
    new = {f"new-{i}": 100 + i for i in range(4)}  # fewer records: offsets behind the old ones
    broker = LocalKafka().start()
    port = broker.port
    restarted: LocalKafka | None = None
    try:
        brokers = broker.bootstrap_servers
        make_table(brokers, table, 2)
        produce(brokers, table, ((k, INT.encode(v)) for k, v in old.items()))
        view = views(brokers, table).start()
        view.wait_for("running", 60)
        wait_until(lambda: view.get_many(old) == old, 30, "the old values")
        events: list[tuple[str, str]] = []
        observer = view.observe(lambda o, n: events.append((o, n)), interval=0.1)

        broker.stop()  # memory-only: every topic is gone
        wait_until(lambda: view.state == "connecting", 30, "the view to notice the outage")
        # reads during the outage are served from the last copy
        assert view.get_many(old) == old
        assert len(view) == len(old)
        assert dict(view.items()) == old
        with pytest.raises(TimeoutError, match="not running"):
            view.wait_for("running", 1)
        [status] = view.status()
        assert status.state == "connecting" and status.error

        restarted = LocalKafka(port=port).start()
        make_table(brokers, table, 2)
        produce(brokers, table, ((k, INT.encode(v)) for k, v in new.items()))
        wait_until(lambda: dict(view.items()) == new, 60, "the view to serve the new changelog")
        assert view.wait_for("running", 30) == "running"
        assert view.get_many([*old, *new]) == {**dict.fromkeys(old), **new}
        [status] = view.status()
        assert status.reconnects >= 1 and status.reloads == 2 and status.error is None
        wait_until(lambda: events and events[-1][1] == "running", 10, "running observed")
        observer.stop()
        assert ("running", "connecting") in events
        assert events[0][0] == "running"
    finally:
        broker.stop()
        if restarted is not None:
            restarted.stop()


def keep_and_double(ctx, storage, key, value):  # type: ignore[no-untyped-def]
    """A view update callback: only keys starting with keep-, values doubled."""
    if not key.startswith("keep-"):
        return
    if value is None:
        storage.delete(key)
    else:
        storage.set(key, INT.encode(2 * INT.decode(value)))


def test_view_update_callback_filters_and_transforms_what_it_holds(
    kafka: LocalKafka, unique: str, views: Callable[..., View | LocalView]
) -> None:
    from ray import cloudpickle as ray_cloudpickle

    ray_cloudpickle.register_pickle_by_value(sys.modules[__name__])
    brokers = kafka.bootstrap_servers
    table = f"{unique}-table"
    make_table(brokers, table, 2)
    produce(brokers, table, [("keep-a", INT.encode(1)), ("drop-b", INT.encode(2))])
    produce(brokers, table, [("keep-c", INT.encode(5)), ("keep-a", INT.encode(3))])
    produce(brokers, table, [("keep-c", None)])
    view = views(brokers, table, update=keep_and_double).start()
    view.wait_for("running", 60)
    wait_until(lambda: dict(view.items()) == {"keep-a": 6}, 30, "the filtered view")
    assert view.get("drop-b") is None
    assert view.get_many(["keep-a", "keep-c"]) == {"keep-a": 6, "keep-c": None}
    kind = type(view)
    with pytest.raises(GokaRayError, match="update"):
        kind(brokers, table, INT, update=lambda ctx, key: None)  # type: ignore[arg-type]
