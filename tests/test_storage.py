from __future__ import annotations

import pytest

from goka_ray import LevelDBStorage, MemoryStorage, StorageError


@pytest.fixture(params=["memory", "leveldb"])
def storage(request, tmp_path):  # type: ignore[no-untyped-def]
    s = MemoryStorage() if request.param == "memory" else LevelDBStorage(tmp_path / "db")
    yield s
    s.close()


def test_set_get_has_delete(storage):
    assert storage.get(b"k") is None and not storage.has(b"k")
    storage.set(b"k", b"v")
    assert storage.get(b"k") == b"v" and storage.has(b"k")
    storage.delete(b"k")
    assert storage.get(b"k") is None
    storage.delete(b"never-there")  # no error


def test_iterate_is_sorted_and_bounded(storage):
    for k in (b"c", b"a", b"d", b"b"):
        storage.set(k, k.upper())
    assert [k for k, _ in storage.iterate()] == [b"a", b"b", b"c", b"d"]
    assert list(storage.iterate(b"b", b"d")) == [(b"b", b"B"), (b"c", b"C")]


def test_a_batch_is_applied_whole_or_not_at_all(storage):
    with pytest.raises(RuntimeError), storage.batch() as b:
        b.set(b"x", b"1")
        raise RuntimeError("crash before the batch ends")
    assert storage.get(b"x") is None and storage.offset() is None
    with storage.batch() as b:
        b.set(b"x", b"1")
        b.set(b"x", b"2")
        b.set_offset(42)
    assert storage.get(b"x") == b"2" and storage.offset() == 42


def test_key_count_follows_inserts_overwrites_and_deletes(storage):
    with storage.batch() as b:
        for i in range(5):
            b.set(b"k%d" % i, b"v")
    storage.set(b"k0", b"again")
    storage.delete(b"k1")
    storage.delete(b"missing")
    assert storage.key_count() == 4


def test_clear_removes_data_and_offset(storage):
    with storage.batch() as b:
        b.set(b"a", b"1")
        b.set_offset(7)
    storage.clear()
    assert list(storage.iterate()) == [] and storage.offset() is None and storage.key_count() == 0


def test_user_keys_cannot_collide_with_metadata(storage):
    storage.set(b"m:offset", b"not an offset")
    storage.set(b"m:count", b"x")
    assert storage.offset() is None and storage.key_count() == 2
    assert storage.get(b"m:offset") == b"not an offset"


def test_reopened_leveldb_has_the_last_committed_batch(tmp_path):
    s = LevelDBStorage(tmp_path / "db")
    with s.batch() as b:
        b.set(b"a", b"1")
        b.set(b"b", b"2")
        b.set_offset(10)
    s.close()
    s = LevelDBStorage(tmp_path / "db")
    assert dict(s.iterate()) == {b"a": b"1", b"b": b"2"}
    assert (s.offset(), s.key_count()) == (10, 2)
    s.close()


def test_opening_a_leveldb_twice_says_what_is_wrong(tmp_path):
    first = LevelDBStorage(tmp_path / "db")
    with pytest.raises(StorageError, match="Is another process using"):
        LevelDBStorage(tmp_path / "db")
    first.close()
