"""A damaged LevelDB copy is never read as if it were whole (issue 10, storage level).

Every kind of damage is done to a real LevelDB directory; opening or reading it either
raises LocalCopyDamaged naming the path and the reason, or gives exactly the state of one
of the batches written (losing the tail of LevelDB's log loses whole batches).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import leveldb_writer
import pytest
from leveldb_damage import AT_REST, corrupt_table_in_place, logs, tables

from goka_ray import LevelDBStorage, LocalCopyDamaged
from goka_ray.core.storage import (
    CLEAN_CLOSE_FILE,
    GENERATION_FILE,
    WriteBatch,
    node_storage_dir,
)

BATCHES = 60
KEYS = 2_000

History = list[dict[bytes, bytes]]


def build(path: Path) -> History:
    """A store written in BATCHES batches (batch i sets offset i), closed and reopened every
    20 batches so that it has table files and a log; returns the state after each batch."""
    rng = random.Random(7)
    state: dict[bytes, bytes] = {}
    history: History = []
    storage = LevelDBStorage(path, write_buffer_size=64 << 10)
    for i in range(BATCHES):
        batch = WriteBatch()
        for _ in range(200):
            key = b"user-%05d" % rng.randrange(KEYS)
            if rng.random() < 0.1:
                batch.delete(key)
                state.pop(key, None)
            else:
                value = b"%d-%s" % (i, key)
                batch.set(key, value)
                state[key] = value
        batch.set_offset(i)
        storage.write(batch)
        history.append(dict(state))
        if i % 20 == 19 and i != BATCHES - 1:
            storage.close()
            storage = LevelDBStorage(path, write_buffer_size=64 << 10)
    storage.close()
    assert tables(path) and logs(path), sorted(p.name for p in path.iterdir())
    return history


def read_whole(path: Path) -> tuple[int | None, dict[bytes, bytes], int]:
    storage = LevelDBStorage(path)
    try:
        return storage.offset(), dict(storage.iterate()), storage.key_count()
    finally:
        storage.close()


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, History]:
    path = tmp_path / "copy"
    return path, build(path)


def test_a_whole_copy_reopens_with_its_last_batch_and_generation(written):
    path, history = written
    storage = LevelDBStorage(path)
    generation = storage.generation
    storage.close()
    assert len(generation) == 32
    assert (path / GENERATION_FILE).read_text() == generation
    assert read_whole(path) == (BATCHES - 1, history[-1], len(history[-1]))


@pytest.mark.parametrize("damage", list(AT_REST.values()), ids=list(AT_REST))
def test_a_damaged_copy_is_never_read_as_whole(written, damage: Callable[[Path], None]):
    path, history = written
    damage(path)
    try:
        offset, data, count = read_whole(path)
    except LocalCopyDamaged as exc:
        assert exc.path == str(path) and exc.reason
        return
    # not detected: then it must be exactly the state after one of the batches
    assert offset is not None
    assert data == history[offset]
    assert count == len(data)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("current-deleted", "does not exist (create_if_missing is false)"),
        ("table-truncated", "where LevelDB's MANIFEST records"),
        ("table-deleted", "missing files"),
        ("manifest-garbage", "Corruption"),
        ("not-leveldb", "does not exist (create_if_missing is false)"),
    ],
)
def test_damage_found_at_open_names_the_path_and_the_reason(written, damage: str, reason: str):
    path, _ = written
    AT_REST[damage](path)
    with pytest.raises(LocalCopyDamaged) as info:
        LevelDBStorage(path)
    assert info.value.path == str(path)
    assert reason in info.value.reason
    assert str(path) in str(info.value) and "rebuilds it from the changelog" in str(info.value)


@pytest.mark.parametrize("which", [0, -1], ids=["oldest-log", "newest-log"])
def test_a_truncated_log_of_a_cleanly_closed_copy_is_scanned_not_trusted(written, which: int):
    # losing the tail of the newest log leaves whole batches; losing writes of an older log
    # that a newer one's batches build on leaves the newest offset with older values: the
    # clean-close record no longer matches, so the copy is scanned against its digest
    path, history = written
    victim = logs(path)[which]
    os.truncate(victim, victim.stat().st_size // 2)
    try:
        storage = LevelDBStorage(path)
    except LocalCopyDamaged as exc:
        assert "was not closed cleanly" in exc.reason
        return
    try:
        assert storage.opened == "scanned"
        offset = storage.offset()
        assert offset is not None
        assert dict(storage.iterate()) == history[offset]
    finally:
        storage.close()


def killed_writer(path: Path, batches: int, *, stop: bool = False) -> None:
    """Run leveldb_writer.py on ``path`` and SIGKILL it after ``batches`` batches (while it
    writes more, or, with ``stop``, while it waits after the last one)."""
    script = str(Path(__file__).with_name("leveldb_writer.py"))
    args = [sys.executable, script, str(path)] + ([str(batches)] if stop else [])
    writer = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    for line in writer.stdout:
        if int(line) >= batches:
            break
    writer.send_signal(signal.SIGKILL)
    writer.wait(30)


def test_a_copy_whose_writer_was_killed_is_verified_by_a_scan_and_whole(tmp_path: Path):
    path = tmp_path / "copy"
    killed_writer(path, 80)
    assert not (path / CLEAN_CLOSE_FILE).exists()
    storage = LevelDBStorage(path)
    try:
        assert storage.opened == "scanned"
        offset = storage.offset()
        assert offset is not None and offset >= 80
        assert dict(storage.iterate()) == leveldb_writer.state_after(offset)
    finally:
        storage.close()
    assert LevelDBStorage(path).opened == "clean"


def test_after_a_crash_a_truncated_newest_log_leaves_an_older_whole_batch(tmp_path: Path):
    path = tmp_path / "copy"
    killed_writer(path, 85, stop=True)  # its newest log then holds the last few batches
    newest = logs(path)[-1]
    assert newest.stat().st_size > 1000
    os.truncate(newest, newest.stat().st_size // 2)
    try:
        storage = LevelDBStorage(path)
    except LocalCopyDamaged:
        pytest.fail("losing the tail of the newest log leaves whole batches; nothing is damaged")
    try:
        offset = storage.offset()
        assert offset is not None and offset < 85  # the last batches are lost, whole
        assert dict(storage.iterate()) == leveldb_writer.state_after(offset)
        assert storage.key_count() == len(leveldb_writer.state_after(offset))
    finally:
        storage.close()


def test_a_corrupt_table_opens_but_every_read_of_it_is_damage(written):
    path, _ = written
    corrupt_table_in_place(path)
    storage = LevelDBStorage(path)
    try:
        with pytest.raises(LocalCopyDamaged, match="iterating over keys") as info:
            list(storage.iterate())
        assert "Corruption" in info.value.reason
        with pytest.raises(LocalCopyDamaged, match="reading a key"):
            for i in range(KEYS):
                storage.get(b"user-%05d" % i)
    finally:
        storage.close()


def test_a_table_corrupted_while_open_is_damage_on_the_next_read(written):
    path, history = written
    storage = LevelDBStorage(path)
    try:
        corrupt_table_in_place(path)
        with pytest.raises(LocalCopyDamaged) as info:
            for key in sorted(history[-1]):
                assert storage.get(key) == history[-1][key]
        assert info.value.path == str(path) and "Corruption" in info.value.reason
        # a copy that failed once takes no more writes (a caller may have caught the error)
        batch = WriteBatch()
        batch.set(b"new", b"value")
        with pytest.raises(LocalCopyDamaged, match="takes no more writes"):
            storage.write(batch)
    finally:
        storage.close()
    assert not (path / CLEAN_CLOSE_FILE).exists()  # its close was not clean


def test_a_write_over_a_corrupted_table_is_damage(written):
    path, history = written
    storage = LevelDBStorage(path)
    try:
        corrupt_table_in_place(path)
        batch = WriteBatch()
        for key in history[-1]:
            batch.set(key, b"x")
        with pytest.raises(LocalCopyDamaged, match="writing a batch"):
            storage.write(batch)
    finally:
        storage.close()
    # its close was not clean: the next open scans every pair and meets the corruption
    with pytest.raises(LocalCopyDamaged, match="verifying it: Corruption"):
        LevelDBStorage(path)


def test_a_missing_generation_marker_is_damage(written):
    path, _ = written
    (path / GENERATION_FILE).unlink()
    with pytest.raises(LocalCopyDamaged, match=f"{GENERATION_FILE} is missing"):
        LevelDBStorage(path)


def test_another_stores_files_under_this_marker_are_damage(written, tmp_path: Path):
    path, _ = written
    other = tmp_path / "other"
    LevelDBStorage(other).close()
    shutil.copy(other / GENERATION_FILE, path / GENERATION_FILE)
    with pytest.raises(LocalCopyDamaged, match="these files belong to another store"):
        LevelDBStorage(path)


def test_a_store_without_any_generation_is_damage(tmp_path: Path):
    import plyvel

    path = tmp_path / "old"
    db = plyvel.DB(str(path), create_if_missing=True)  # as a store of an older goka-ray
    db.put(b"m:offset", b"5")
    db.close()
    with pytest.raises(LocalCopyDamaged, match="holds a generation id"):
        LevelDBStorage(path)


def test_reopen_after_moving_a_damaged_copy_aside_starts_a_new_generation(written, tmp_path):
    path, _ = written
    storage = LevelDBStorage(path)
    old = storage.generation
    storage.close()
    path.rename(tmp_path / "aside")
    storage.reopen()
    try:
        assert storage.generation != old
        assert (storage.offset(), storage.key_count(), list(storage.iterate())) == (None, 0, [])
    finally:
        storage.close()


def test_an_empty_directory_becomes_a_new_store(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    storage = LevelDBStorage(tmp_path / "empty")
    storage.set(b"k", b"v")
    storage.close()
    assert read_whole(tmp_path / "empty") == (None, {b"k": b"v"}, 1)


def test_clear_keeps_the_store_whole(written):
    path, _ = written
    storage = LevelDBStorage(path)
    storage.clear()
    storage.close()
    assert read_whole(path) == (None, {}, 0)


def test_node_storage_dir_keys_copies_by_node(tmp_path: Path):
    assert node_storage_dir(tmp_path, "ab12") == tmp_path / "ab12"
    assert node_storage_dir("/data/{node_id}/goka", "ab12") == Path("/data/ab12/goka")
    assert node_storage_dir("/data/{hostname}", "ab12", "host-1") == Path("/data/host-1")
    assert node_storage_dir(tmp_path, "n1") != node_storage_dir(tmp_path, "n2")
