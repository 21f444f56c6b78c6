"""A failing read of a local copy is a storage error, never a callback failure (issue 10).

The tables are real LevelDB copies whose table files are corrupted in place; the core must
abandon the batch with LocalCopyDamaged whatever the input's on_error policy, and even
when the callback catches the error itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from leveldb_damage import corrupt_table_in_place, tables

from goka_ray import (
    Context,
    Input,
    Join,
    LevelDBStorage,
    LocalCopyDamaged,
    Lookup,
    PartitionCore,
    Persist,
    Visitor,
    codecs,
    define_group,
)
from goka_ray.core.messages import InputMessage
from goka_ray.core.storage import MemoryStorage, WriteBatch
from goka_ray.core.tables import PartitionedTable, TablePartition, UpdateContext, UpdateStorage

INT = codecs.Int()
USERS = [f"user-{i:05d}" for i in range(3_000)]


def damaged_copy(path: Path) -> LevelDBStorage:
    """A LevelDB copy holding every user (count 1) in table files, corrupted while open."""
    storage = LevelDBStorage(path, write_buffer_size=64 << 10)
    batch = WriteBatch()
    for user in USERS:
        batch.set(user.encode(), INT.encode(1))
    storage.write(batch)
    storage.close()
    storage = LevelDBStorage(path)  # the log is now a table file
    assert tables(path)
    corrupt_table_in_place(path)
    return storage


@pytest.fixture
def copy(tmp_path: Path) -> Iterator[LevelDBStorage]:
    storage = damaged_copy(tmp_path / "copy")
    yield storage
    storage.close()


def clicks(n: int = len(USERS)) -> list[InputMessage]:
    return [
        InputMessage("clicks", 0, i, user.encode(), b"click", 0, None)
        for i, user in enumerate(USERS[:n])
    ]


def count(ctx: Context, _: str) -> None:
    ctx.set_value((ctx.value() or 0) + 1)


def count_ignoring_errors(ctx: Context, _: str) -> None:
    try:
        current = ctx.value() or 0
    except Exception:  # a careless callback: treats any error as "no value yet"
        current = 0
    ctx.set_value(current + 1)


@pytest.mark.parametrize("policy", ["fail", "skip", "dead_letter"])
def test_a_damaged_table_read_abandons_the_batch_whatever_the_on_error_policy(copy, policy):
    graph = define_group(
        "g", Input("clicks", codecs.String(), count, on_error=policy), Persist(INT)
    )
    core = PartitionCore(graph, 0, copy)
    with pytest.raises(LocalCopyDamaged) as info:
        core.process(clicks())
    assert info.value.path == str(copy.path)
    assert (core.stats.processed, core.stats.skipped, core.stats.dead_lettered) == (0, 0, 0)
    assert core.stats.callback_errors == 0


def test_a_callback_that_catches_the_storage_error_does_not_hide_it(copy):
    graph = define_group(
        "g", Input("clicks", codecs.String(), count_ignoring_errors, on_error="skip"), Persist(INT)
    )
    core = PartitionCore(graph, 0, copy)
    with pytest.raises(LocalCopyDamaged):
        core.process(clicks())
    # after the copy is rebuilt, the batch is processed again from scratch
    core.discard_pending()
    assert not core.has_pending


def test_a_damaged_joined_table_read_is_a_storage_error(copy):
    def with_join(ctx: Context, _: str) -> None:
        ctx.set_value(ctx.join("users") or 0)

    graph = define_group(
        "g",
        Input("clicks", codecs.String(), with_join, on_error="skip"),
        Join("users", INT),
        Persist(INT),
    )
    core = PartitionCore(graph, 0, MemoryStorage(), joins={"users": copy})
    with pytest.raises(LocalCopyDamaged):
        core.process(clicks())


def test_a_damaged_lookup_read_is_a_storage_error(copy):
    def with_lookup(ctx: Context, _: str) -> None:
        ctx.set_value(ctx.lookup("users", ctx.key) or 0)

    graph = define_group(
        "g",
        Input("clicks", codecs.String(), with_lookup, on_error="dead_letter"),
        Lookup("users", INT),
        Persist(INT),
    )
    core = PartitionCore(graph, 0, MemoryStorage())
    core.connect_lookup("users", PartitionedTable("users", [copy]))
    with pytest.raises(LocalCopyDamaged):
        core.process(clicks())


def test_a_visitor_reading_a_damaged_table_is_a_storage_error(copy):
    def reset(ctx: Context, meta: Any) -> None:
        try:
            ctx.value()
        except Exception:
            pass
        ctx.set_value(0)

    graph = define_group(
        "g", Input("clicks", codecs.String(), count), Persist(INT), Visitor("reset", reset)
    )
    core = PartitionCore(graph, 0, copy)
    with pytest.raises(LocalCopyDamaged):
        core.visit("reset", keys=USERS)


def test_an_update_callback_meeting_a_damaged_table_is_a_storage_error(copy):
    def add(ctx: UpdateContext, storage: UpdateStorage, key: str, value: bytes | None) -> None:
        old = storage.get(key)
        storage.set(key, INT.encode((INT.decode(old) if old else 0) + 1))

    table = TablePartition("users", 0, copy, INT, update=add, group="g")
    records = [(user.encode(), INT.encode(1)) for user in USERS]
    with pytest.raises(LocalCopyDamaged):
        table.apply_changelog(records, len(records))
