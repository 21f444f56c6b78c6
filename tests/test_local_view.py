"""The in-process view (LocalView): its table copy across partitions, and a plain Python
process with no Ray using it on the real local broker. The behaviours it shares with the
actor-served View (recovery, following, iteration, state, update callbacks, outage, reload)
are tested for both kinds in test_view_parity.py."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from goka_ray import LocalView, codecs
from goka_ray.core.codecs import Bytes
from goka_ray.core.storage import WriteBatch
from goka_ray.core.tables import TablePartition
from goka_ray.errors import GokaRayError
from goka_ray.kafka.view_copies import MemoryCopies, PartitionSlice
from goka_ray.tools.local import LocalKafka


def _write(storage: PartitionSlice, writes: dict[bytes, bytes | None], offset: int) -> None:
    batch = WriteBatch()
    batch.writes.update(writes)
    batch.offset = offset
    storage.write(batch)


def test_one_dict_serves_every_partition_and_a_reload_replaces_only_its_own() -> None:
    copies = MemoryCopies(threading.RLock())
    p0 = copies.storage(0)
    p1 = copies.storage(1)
    assert isinstance(p0, PartitionSlice) and isinstance(p1, PartitionSlice)
    _write(p0, {b"a": b"1", b"c": b"3"}, 2)
    _write(p1, {b"b": b"2", b"d": b"4"}, 2)
    _write(p1, {b"d": None}, 3)  # a tombstone
    assert copies.get_many([b"a", b"b", b"c", b"d"]) == [b"1", b"2", b"3", None]
    assert copies.count() == 3 and p0.key_count() == 2 and p1.offset() == 3
    assert copies.page(None, None, 10) == [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]

    # partition 1's changelog was recreated: its reload is built aside, unseen by readers
    fresh = copies.fresh(TablePartition("t", 1, p1, Bytes()))
    assert isinstance(fresh, PartitionSlice)
    _write(fresh, {b"e": b"5"}, 1)
    assert copies.get(b"e") is None and copies.get(b"b") == b"2"
    assert fresh.get(b"e") == b"5"  # the follower (and an update callback) see the reload
    # the follower switches to it and closes the old copy: the reload is served, atomically
    p1.close()
    assert copies.get(b"b") is None and copies.get(b"e") == b"5"
    assert copies.get(b"a") == b"1"  # partition 0 untouched
    assert copies.page(None, None, 10) == [(b"a", b"1"), (b"c", b"3"), (b"e", b"5")]
    _write(fresh, {b"f": b"6"}, 2)  # served now: its writes reach the table dict
    assert copies.get(b"f") == b"6" and copies.count() == 4

    p0.clear()  # a reload in place withdraws the partition's keys
    assert copies.get(b"a") is None and copies.count() == 2 and p0.offset() is None


NO_RAY_SERVICE = textwrap.dedent(
    """
    import sys
    sys.modules["ray"] = None  # any import of Ray fails: this process has none

    from confluent_kafka import Producer

    from goka_ray import LocalView, TopicManager, codecs, table

    brokers, storage, storage_dir = sys.argv[1:4]
    topic = table("no-ray-" + storage)
    ints = codecs.Int()
    with TopicManager(brokers) as topics:
        topics.ensure_table(topic, 3)
    producer = Producer({"bootstrap.servers": brokers})
    for i in range(50):
        producer.produce(topic, key=f"user-{i:02d}".encode(), value=ints.encode(i))
    assert producer.flush(30) == 0
    with LocalView(brokers, topic, ints, storage=storage, storage_dir=storage_dir) as view:
        assert view.wait_for("running", 60) == "running"
        assert len(view) == 50 and view.get("user-07") == 7 and view.get(b"nobody") is None
        assert [k for k, _ in view.iterator("user-10", "user-13")] == [
            "user-10", "user-11", "user-12"
        ]
        producer.produce(topic, key=b"user-07", value=ints.encode(700))  # followed
        producer.produce(topic, key=b"user-08", value=None)  # a tombstone
        assert producer.flush(30) == 0
        import time
        deadline = time.monotonic() + 30
        while (view.get("user-07"), view.has("user-08")) != (700, False):
            assert time.monotonic() < deadline, "the update did not reach the copy"
            time.sleep(0.02)
        # the status (the follower's state and error, the key count) is polled: its thread
        # updates them apart from the values a reader sees
        while True:
            [status] = view.status()
            if (status.state, status.keys, status.error) == ("running", 49, None):
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.02)
    assert view.state == "idle"
    assert "ray" not in {m.split(".")[0] for m, v in sys.modules.items() if v is not None}
    print("served without Ray")
    """
)


def test_a_plain_python_process_without_ray_serves_a_table(
    kafka: LocalKafka, tmp_path: Path
) -> None:
    script = tmp_path / "service.py"
    script.write_text(NO_RAY_SERVICE)
    for storage in ("memory", "leveldb"):
        done = subprocess.run(
            [sys.executable, str(script), kafka.bootstrap_servers, storage, str(tmp_path / "db")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert "served without Ray" in done.stdout
    assert list((tmp_path / "db").iterdir()) == []  # LevelDB copies are deleted on stop


def test_a_local_view_says_what_to_do_before_start_and_when_sent_elsewhere() -> None:
    view = LocalView("127.0.0.1:1", "clicks-table", codecs.Int())  # nothing contacted yet
    assert view.state == "idle" and view.wait_for("idle", 0) == "idle"
    with pytest.raises(GokaRayError, match="not started; call start"):
        view.get("alice")
    with pytest.raises(GokaRayError, match="not started; call start"):
        view.wait_for("running", 1)
    with pytest.raises(GokaRayError, match="open a LocalView there"):
        pickle.dumps(view)
    with pytest.raises(GokaRayError, match="use 'memory' or 'leveldb'"):
        LocalView("127.0.0.1:1", "clicks-table", codecs.Int(), storage="rocksdb")  # type: ignore[arg-type]
