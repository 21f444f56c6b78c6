"""The old values a batch's writer read are handed to LevelDB at commit (WriteBatch.known),
so a written key is not read twice; the stored key count and digest must stay exactly what a
scan of the copy finds, or a copy that was not closed cleanly would be taken for damaged."""

from __future__ import annotations

from pathlib import Path

from goka_ray import Context, Input, LevelDBStorage, Persist, codecs, define_group
from goka_ray.core.messages import InputMessage
from goka_ray.core.partition import PartitionCore
from goka_ray.core.storage import CLEAN_CLOSE_FILE, WriteBatch


def count_or_reset(ctx: Context, msg: bytes) -> None:
    if msg == b"reset":
        ctx.delete()
    elif msg == b"blind":
        ctx.set_value(100)  # a write without a read: its old value is not known
    else:
        ctx.set_value((ctx.value() or 0) + 1)


def test_counts_written_with_known_old_values_verify_after_an_unclean_close(tmp_path: Path):
    graph = define_group(
        "hints", Input("in", codecs.Bytes(), count_or_reset), Persist(codecs.Int())
    )
    path = tmp_path / "copy"
    core = PartitionCore(graph, 0, LevelDBStorage(path))
    values = [b"+", b"+", b"reset", b"blind", b"+"]
    offset = 0
    expected: dict[bytes, int] = {}
    for batch in range(6):
        msgs = []
        for i in range(40):
            key = f"user-{(i * 7 + batch) % 13}".encode()
            value = values[(i + batch) % len(values)]
            msgs.append(InputMessage("in", 0, offset, key, value))
            offset += 1
            if value == b"reset":
                expected.pop(key, None)
            elif value == b"blind":
                expected[key] = 100
            else:
                expected[key] = expected.get(key, 0) + 1
        result = core.process(msgs)
        assert result.failure is None
        core.commit(result, batch + 1)
    storage = core.table.storage if core.table is not None else None
    assert isinstance(storage, LevelDBStorage)
    assert storage.key_count() == len(expected)
    storage.close()
    (path / CLEAN_CLOSE_FILE).unlink()  # as after a crash: the reopen scans every pair
    reopened = LevelDBStorage(path)
    assert reopened.opened == "scanned"  # the count and digest add up: not damage
    assert {k: codecs.Int().decode(v) for k, v in reopened.iterate()} == expected
    reopened.close()


def test_a_known_old_value_replaces_the_read_and_a_missing_one_is_read(tmp_path: Path):
    path = tmp_path / "copy"
    storage = LevelDBStorage(path)
    with storage.batch() as b:
        b.set(b"a", b"1")
        b.set(b"b", b"2")
    batch = WriteBatch()
    batch.writes = {b"a": b"10", b"b": None, b"c": b"3"}
    batch.known = {b"a": b"1"}  # b and c: not known, read from the store
    storage.write(batch)
    assert storage.key_count() == 2
    storage.close()
    (path / CLEAN_CLOSE_FILE).unlink()
    reopened = LevelDBStorage(path)
    assert reopened.opened == "scanned"
    assert dict(reopened.iterate()) == {b"a": b"10", b"c": b"3"}
    reopened.close()
