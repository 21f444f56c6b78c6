"""Table storage: both backends behave alike; LevelDB keeps the last committed batch on disk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from goka_ray import LevelDBStorage, LocalCopyDamaged, MemoryStorage, Storage, StorageLocked
from goka_ray.core.storage import WriteBatch, partition_dir, read_all


@pytest.fixture(params=["memory", "leveldb"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    s: Storage = MemoryStorage() if request.param == "memory" else LevelDBStorage(tmp_path / "db")
    yield s
    s.close()


# -- single keys ---------------------------------------------------------------------------


def test_an_empty_storage_has_no_keys_no_offset_and_count_zero(storage: Storage) -> None:
    assert storage.get(b"k") is None
    assert not storage.has(b"k")
    assert list(storage.iterate()) == []
    assert (storage.offset(), storage.key_count()) == (None, 0)


def test_set_then_get_and_has(storage: Storage) -> None:
    storage.set(b"k", b"v")
    assert storage.get(b"k") == b"v"
    assert storage.has(b"k")


def test_set_overwrites(storage: Storage) -> None:
    storage.set(b"k", b"v1")
    storage.set(b"k", b"v2")
    assert storage.get(b"k") == b"v2"


def test_delete_removes_the_key(storage: Storage) -> None:
    storage.set(b"k", b"v")
    storage.delete(b"k")
    assert storage.get(b"k") is None
    assert not storage.has(b"k")


def test_deleting_an_absent_key_is_not_an_error(storage: Storage) -> None:
    storage.delete(b"never-there")
    assert storage.key_count() == 0


def test_an_empty_value_is_a_present_value(storage: Storage) -> None:
    storage.set(b"k", b"")
    assert storage.get(b"k") == b""
    assert storage.has(b"k")
    assert storage.key_count() == 1


def test_the_empty_key_and_binary_keys_are_ordinary_keys(storage: Storage) -> None:
    storage.set(b"", b"empty")
    storage.set(b"\x00\xff", b"binary")
    assert (storage.get(b""), storage.get(b"\x00\xff")) == (b"empty", b"binary")
    assert storage.key_count() == 2


# -- iteration -----------------------------------------------------------------------------


def fill(storage: Storage, *keys: bytes) -> None:
    with storage.batch() as b:
        for k in keys:
            b.set(k, k.upper())


def test_iterate_yields_all_pairs_sorted_by_key_bytes(storage: Storage) -> None:
    fill(storage, b"c", b"a", b"b10", b"b2", b"\x00", b"B")
    assert [k for k, _ in storage.iterate()] == [b"\x00", b"B", b"a", b"b10", b"b2", b"c"]
    assert dict(storage.iterate())[b"b2"] == b"B2"


def test_iterate_start_is_inclusive_and_end_exclusive(storage: Storage) -> None:
    fill(storage, b"a", b"b", b"c", b"d")
    assert list(storage.iterate(b"b", b"d")) == [(b"b", b"B"), (b"c", b"C")]


def test_iterate_with_only_a_start_or_only_an_end(storage: Storage) -> None:
    fill(storage, b"a", b"b", b"c")
    assert [k for k, _ in storage.iterate(start=b"b")] == [b"b", b"c"]
    assert [k for k, _ in storage.iterate(end=b"b")] == [b"a"]


def test_iterate_bounds_need_not_be_existing_keys(storage: Storage) -> None:
    fill(storage, b"apple", b"banana", b"cherry")
    assert [k for k, _ in storage.iterate(b"b", b"c")] == [b"banana"]
    assert list(storage.iterate(b"x", b"z")) == []


def test_iterate_leaves_out_deleted_keys(storage: Storage) -> None:
    fill(storage, b"a", b"b", b"c")
    storage.delete(b"b")
    assert [k for k, _ in storage.iterate()] == [b"a", b"c"]


def test_writes_during_an_iteration_do_not_disturb_it(storage: Storage) -> None:
    fill(storage, b"a", b"b", b"c")
    seen = []
    for key, _ in storage.iterate():
        seen.append(key)
        storage.delete(b"c")
        storage.set(b"bb", b"new")
    assert seen == [b"a", b"b", b"c"]
    assert [k for k, _ in storage.iterate()] == [b"a", b"b", b"bb"]


def test_read_all_returns_every_pair(storage: Storage) -> None:
    fill(storage, b"x", b"y")
    assert read_all(storage) == {b"x": b"X", b"y": b"Y"}


# -- batches and offsets -------------------------------------------------------------------


def test_a_batch_is_applied_when_its_block_ends(storage: Storage) -> None:
    with storage.batch() as b:
        b.set(b"a", b"1")
        b.set(b"b", b"2")
        assert storage.get(b"a") is None  # nothing visible before the block ends
    assert read_all(storage) == {b"a": b"1", b"b": b"2"}


def test_a_batch_that_raises_writes_nothing(storage: Storage) -> None:
    storage.set(b"keep", b"old")
    with pytest.raises(RuntimeError, match="crash"), storage.batch() as b:
        b.set(b"x", b"1")
        b.delete(b"keep")
        b.set_offset(9)
        raise RuntimeError("crash before the batch ends")
    assert read_all(storage) == {b"keep": b"old"}
    assert (storage.offset(), storage.key_count()) == (None, 1)


def test_the_last_write_to_a_key_in_a_batch_wins(storage: Storage) -> None:
    storage.set(b"gone", b"v")
    with storage.batch() as b:
        b.set(b"x", b"1")
        b.set(b"x", b"2")
        b.set(b"y", b"1")
        b.delete(b"y")
        b.delete(b"gone")
        b.set(b"gone", b"back")
    assert read_all(storage) == {b"x": b"2", b"gone": b"back"}


def test_write_applies_a_prepared_batch_with_its_offset(storage: Storage) -> None:
    batch = WriteBatch()
    batch.set(b"a", b"1")
    batch.delete(b"b")
    batch.set_offset(42)
    assert len(batch) == 2
    storage.write(batch)
    assert (read_all(storage), storage.offset()) == ({b"a": b"1"}, 42)


def test_the_offset_is_stored_with_the_data(storage: Storage) -> None:
    with storage.batch() as b:
        b.set(b"x", b"1")
        b.set_offset(42)
    assert (storage.get(b"x"), storage.offset()) == (b"1", 42)


def test_a_batch_without_an_offset_keeps_the_previous_offset(storage: Storage) -> None:
    with storage.batch() as b:
        b.set_offset(5)
    storage.set(b"x", b"1")
    with storage.batch() as b:
        b.set(b"y", b"2")
    assert storage.offset() == 5


def test_an_offset_alone_can_be_stored(storage: Storage) -> None:
    with storage.batch() as b:
        b.set_offset(0)
    assert (storage.offset(), storage.key_count()) == (0, 0)


def test_a_later_offset_replaces_an_earlier_one(storage: Storage) -> None:
    for offset in (3, 10, 11):
        with storage.batch() as b:
            b.set(b"k", str(offset).encode())
            b.set_offset(offset)
    assert storage.offset() == 11


# -- key count -----------------------------------------------------------------------------


def test_key_count_follows_inserts_overwrites_and_deletes(storage: Storage) -> None:
    with storage.batch() as b:
        for i in range(5):
            b.set(b"k%d" % i, b"v")
    assert storage.key_count() == 5
    storage.set(b"k0", b"again")  # overwrite: no new key
    assert storage.key_count() == 5
    storage.delete(b"k1")
    assert storage.key_count() == 4
    storage.delete(b"k1")  # already gone
    storage.delete(b"missing")
    assert storage.key_count() == 4
    with storage.batch() as b:
        b.set(b"new", b"v")  # +1
        b.delete(b"k2")  # -1
        b.set(b"k3", b"v3")  # overwrite
        b.delete(b"absent")  # nothing
    assert storage.key_count() == 4 == len(read_all(storage))


def test_key_count_of_a_key_set_and_deleted_in_one_batch(storage: Storage) -> None:
    with storage.batch() as b:
        b.set(b"a", b"1")
        b.delete(b"a")
    assert storage.key_count() == 0


# -- clear and metadata --------------------------------------------------------------------


def test_clear_removes_data_offset_and_count(storage: Storage) -> None:
    with storage.batch() as b:
        b.set(b"a", b"1")
        b.set(b"b", b"2")
        b.set_offset(7)
    storage.clear()
    assert list(storage.iterate()) == []
    assert (storage.offset(), storage.key_count(), storage.get(b"a")) == (None, 0, None)


def test_a_cleared_storage_can_be_written_again(storage: Storage) -> None:
    storage.set(b"a", b"1")
    storage.clear()
    with storage.batch() as b:
        b.set(b"b", b"2")
        b.set_offset(3)
    assert (read_all(storage), storage.offset(), storage.key_count()) == ({b"b": b"2"}, 3, 1)


@pytest.mark.parametrize("key", [b"m:offset", b"m:count", b"d", b"dm:offset", b"m", b"m:"])
def test_user_keys_cannot_collide_with_metadata_keys(storage: Storage, key: bytes) -> None:
    with storage.batch() as b:
        b.set(key, b"not metadata")
        b.set_offset(4)
    storage.set(b"other", b"x")
    assert storage.get(key) == b"not metadata"
    assert (storage.offset(), storage.key_count()) == (4, 2)
    assert [k for k, _ in storage.iterate()] == sorted([key, b"other"])


# -- LevelDB on disk -----------------------------------------------------------------------


def test_reopened_leveldb_has_data_offset_and_count_of_the_last_committed_batch(
    tmp_path: Path,
) -> None:
    s = LevelDBStorage(tmp_path / "db")
    with s.batch() as b:
        b.set(b"a", b"1")
        b.set(b"b", b"2")
        b.set(b"c", b"3")
        b.set_offset(10)
    with s.batch() as b:
        b.delete(b"c")
        b.set(b"a", b"1'")
        b.set_offset(12)
    with pytest.raises(RuntimeError), s.batch() as b:
        b.set(b"z", b"lost")
        b.set_offset(99)
        raise RuntimeError("crash mid-batch")
    s.close()
    s = LevelDBStorage(tmp_path / "db")
    try:
        assert read_all(s) == {b"a": b"1'", b"b": b"2"}
        assert (s.offset(), s.key_count()) == (12, 2)
    finally:
        s.close()


def test_reopened_cleared_leveldb_is_empty(tmp_path: Path) -> None:
    s = LevelDBStorage(tmp_path / "db")
    with s.batch() as b:
        b.set(b"a", b"1")
        b.set_offset(1)
    s.clear()
    s.close()
    s = LevelDBStorage(tmp_path / "db")
    try:
        assert (read_all(s), s.offset(), s.key_count()) == ({}, None, 0)
    finally:
        s.close()


def test_leveldb_creates_missing_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c"
    s = LevelDBStorage(path)
    s.set(b"k", b"v")
    s.close()
    assert path.is_dir()


def test_opening_the_same_leveldb_twice_is_a_storage_locked_error_saying_why(
    tmp_path: Path,
) -> None:
    first = LevelDBStorage(tmp_path / "db")
    try:
        with pytest.raises(StorageLocked) as info:
            LevelDBStorage(tmp_path / "db")
        message = str(info.value)
        assert f"cannot open LevelDB at {tmp_path / 'db'}" in message
        assert "Another process (or another storage object in this one) has it open" in message
        assert not isinstance(info.value, LocalCopyDamaged)
    finally:
        first.close()


def test_a_closed_leveldb_can_be_opened_again(tmp_path: Path) -> None:
    LevelDBStorage(tmp_path / "db").close()
    s = LevelDBStorage(tmp_path / "db")
    s.set(b"k", b"v")
    assert s.get(b"k") == b"v"
    s.close()


def test_closing_twice_is_harmless(tmp_path: Path) -> None:
    s = LevelDBStorage(tmp_path / "db")
    s.close()
    s.close()


def test_opening_leveldb_where_a_file_is_is_a_damaged_copy(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(LocalCopyDamaged, match="is a file, not a LevelDB directory") as info:
        LevelDBStorage(tmp_path / "file")
    assert info.value.path == str(tmp_path / "file")


def test_destroy_removes_the_directory(tmp_path: Path) -> None:
    s = LevelDBStorage(tmp_path / "db")
    s.set(b"k", b"v")
    s.destroy()
    assert not (tmp_path / "db").exists()
    fresh = LevelDBStorage(tmp_path / "db")
    assert (read_all(fresh), fresh.offset()) == ({}, None)
    fresh.close()


def test_partition_dir_is_base_group_table_and_zero_padded_partition(tmp_path: Path) -> None:
    assert partition_dir(tmp_path, "g", "g-table", 7) == tmp_path / "g" / "g-table" / "0007"
    assert partition_dir("base", "g", "users", 12) == Path("base/g/users/0012")
