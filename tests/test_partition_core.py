from __future__ import annotations

import pytest

from goka_ray import Context, Input, PartitionCore, Persist, ProcessingError, codecs, define_group
from goka_ray.messages import InputMessage
from goka_ray.storage import MemoryStorage

INT = codecs.Int()


def add(ctx: Context, n: int) -> None:
    if n < 0:
        raise ValueError("negative")
    ctx.set_value((ctx.value() or 0) + n)


def msg(key: str, value: bytes | None, offset: int, topic: str = "nums") -> InputMessage:
    return InputMessage(topic, 0, offset, key.encode(), value, 0, None)


def core(**input_options) -> PartitionCore:  # type: ignore[no-untyped-def]
    graph = define_group("sum", Input("nums", INT, add, **input_options), Persist(INT))
    return PartitionCore(graph, 0, MemoryStorage())


def test_batch_coalesces_table_writes_and_records_positions():
    c = core()
    result = c.process(
        [msg("a", INT.encode(1), 0), msg("b", INT.encode(2), 1), msg("a", INT.encode(3), 2)]
    )
    assert result.table_writes == {b"a": INT.encode(4), b"b": INT.encode(2)}
    assert result.positions == {("nums", 0): 3}
    assert result.processed == 3 and result.failure is None


def test_pending_writes_are_visible_before_commit_and_stored_by_commit():
    c = core()
    first = c.process([msg("a", INT.encode(1), 0)])
    second = c.process([msg("a", INT.encode(1), 1)])
    assert second.table_writes == {b"a": INT.encode(2)}
    assert c.table.storage.get(b"a") is None  # type: ignore[union-attr]
    c.commit(first, 5)
    assert c.has_pending  # the later batch's write is still pending
    c.commit(second, 6)
    assert not c.has_pending
    assert c.table.storage.get(b"a") == INT.encode(2)  # type: ignore[union-attr]
    assert c.table.offset == 6  # type: ignore[union-attr]


def test_failure_mid_batch_keeps_earlier_effects_only():
    c = core()
    result = c.process(
        [msg("a", INT.encode(1), 0), msg("b", INT.encode(-1), 1), msg("c", INT.encode(1), 2)]
    )
    assert result.table_writes == {b"a": INT.encode(1)}
    assert result.positions == {("nums", 0): 1}
    assert isinstance(result.failure, ProcessingError)
    assert (result.failure.offset, result.failure.key) == (1, "b")


def test_decode_policies():
    assert core().process([msg("a", b"bad", 0)]).failure is not None
    skipped = core(on_decode_error="skip").process([msg("a", b"bad", 0)])
    assert (skipped.skipped, skipped.positions, skipped.failure) == (1, {("nums", 0): 1}, None)
    dead = core(on_decode_error="dead_letter").process([msg("a", b"bad", 0)])
    [letter] = dead.emits
    assert (letter.topic, letter.key, letter.value) == ("sum-dlq", b"a", b"bad")
    assert dict(letter.headers or [])["goka-ray.offset"] == b"0"


def test_undecodable_keys_follow_the_policy():
    bad_key = InputMessage("nums", 0, 0, b"\xff", INT.encode(1), 0, None)
    assert core(on_decode_error="skip").process([bad_key]).skipped == 1
    assert core().process([bad_key]).failure is not None


def test_nil_policies():
    seen: list[object] = []
    graph = define_group(
        "n", Input("nums", codecs.Bytes(), lambda ctx, v: seen.append(v), nil="process")
    )
    PartitionCore(graph, 0).process([msg("a", None, 0, "nums")])
    graph = define_group(
        "n", Input("nums", codecs.Bytes(), lambda ctx, v: seen.append(v), nil="decode")
    )
    PartitionCore(graph, 0).process([msg("a", None, 0, "nums")])
    ignored = core().process([msg("a", None, 0)])
    assert seen == [None, b""] and ignored.skipped == 1 and ignored.positions


def test_recover_applies_records_tombstones_and_offset():
    c = core()
    applied = c.recover([(b"a", INT.encode(1)), (b"b", INT.encode(2)), (b"a", None)], 3)
    assert applied == 3
    assert dict(c.table.storage.iterate()) == {b"b": INT.encode(2)}  # type: ignore[union-attr]
    assert c.table.offset == 3  # type: ignore[union-attr]


def test_stats_count_processed_skipped_and_writes():
    c = core(on_decode_error="skip")
    c.process([msg("a", INT.encode(1), 0), msg("a", b"bad", 1)])
    assert (c.stats.processed, c.stats.skipped, c.stats.table_writes) == (1, 1, 1)


def test_message_for_an_unknown_topic_fails():
    with pytest.raises(ProcessingError, match="does not consume"):
        raise core().process([msg("a", INT.encode(1), 0, topic="other")]).failure  # type: ignore[misc]
