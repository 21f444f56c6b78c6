"""PartitionCore: batches, coalesced writes, commit and pending state, recovery, bad input."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from goka_ray import (
    CodecError,
    Context,
    ContextError,
    Input,
    Join,
    LevelDBStorage,
    Lookup,
    Loop,
    Output,
    PartitionCore,
    Persist,
    ProcessingError,
    codecs,
    define_group,
)
from goka_ray.core.messages import Headers, InputMessage
from goka_ray.core.storage import MemoryStorage, Storage, read_all

INT, S = codecs.Int(), codecs.String()


def add(ctx: Context, n: int) -> None:
    """Sum per key and emit the total; zero deletes the key; a negative number fails the
    message after its write and emit, which therefore must not take effect."""
    if n == 0:
        ctx.delete()
        return
    total = (ctx.value() or 0) + n
    ctx.set_value(total)
    ctx.emit("totals", ctx.key, total)
    if n < 0:
        raise ValueError(f"negative: {n}")


def msg(
    key: str | bytes | None,
    value: bytes | None,
    offset: int,
    topic: str = "nums",
    headers: Headers | None = None,
    partition: int = 0,
) -> InputMessage:
    kb = key.encode() if isinstance(key, str) else key
    return InputMessage(topic, partition, offset, kb, value, 1_700_000_000_000, headers)


def num(key: str, n: int, offset: int, topic: str = "nums") -> InputMessage:
    return msg(key, INT.encode(n), offset, topic)


def sum_graph(**input_options: Any) -> Any:
    return define_group(
        "sum", Input("nums", INT, add, **input_options), Persist(INT), Output("totals", INT)
    )


def core(storage: Storage | None = None, **input_options: Any) -> PartitionCore:
    return PartitionCore(sum_graph(**input_options), 0, storage or MemoryStorage())


def stored(c: PartitionCore) -> dict[bytes, bytes]:
    assert c.table is not None
    return dict(read_all(c.table.storage))


@pytest.fixture
def leveldb(tmp_path: Path) -> Iterator[LevelDBStorage]:
    s = LevelDBStorage(tmp_path / "table")
    yield s
    s.close()


# -- a batch -------------------------------------------------------------------------------


def test_a_batch_runs_every_message_and_counts_them() -> None:
    result = core().process([num("a", 1, 0), num("b", 2, 1), num("a", 3, 2)])
    assert (result.processed, result.skipped, result.dead_lettered) == (3, 0, 0)
    assert result.failure is None


def test_table_writes_are_coalesced_to_the_last_value_of_each_key() -> None:
    result = core().process([num("a", 1, 0), num("b", 2, 1), num("a", 3, 2), num("a", 5, 3)])
    assert result.table_writes == {b"a": INT.encode(9), b"b": INT.encode(2)}


def test_a_set_then_a_delete_in_one_batch_coalesces_to_a_tombstone() -> None:
    result = core().process([num("a", 1, 0), num("a", 0, 1)])
    assert result.table_writes == {b"a": None}


def test_changelog_has_one_record_per_changed_key_with_its_last_value() -> None:
    result = core().process([num("a", 1, 0), num("b", 2, 1), num("a", 3, 2), num("b", 0, 3)])
    assert [(m.key, m.value) for m in result.changelog()] == [(b"a", INT.encode(4)), (b"b", None)]


def test_a_message_without_a_table_write_adds_none() -> None:
    graph = define_group("g", Input("nums", INT, lambda ctx, n: None), Persist(INT))
    assert PartitionCore(graph, 0).process([num("a", 1, 0)]).table_writes == {}


def test_emits_are_every_emit_in_the_order_the_callbacks_made_them() -> None:
    def fan_out(ctx: Context, n: int) -> None:
        ctx.emit("out", f"{ctx.key}-first", n)
        ctx.loopback(ctx.key, n * 10)
        ctx.emit("out", f"{ctx.key}-second", n)

    graph = define_group(
        "f", Input("nums", INT, fan_out), Output("out", INT), Loop(INT, lambda ctx, n: None)
    )
    result = PartitionCore(graph, 0).process([num("a", 1, 0), num("b", 2, 1)])
    assert [(m.topic, m.key, m.value) for m in result.emits] == [
        ("out", b"a-first", INT.encode(1)),
        ("f-loop", b"a", INT.encode(10)),
        ("out", b"a-second", INT.encode(1)),
        ("out", b"b-first", INT.encode(2)),
        ("f-loop", b"b", INT.encode(20)),
        ("out", b"b-second", INT.encode(2)),
    ]
    assert all(m.partition is None for m in result.emits)  # the partitioner chooses


def test_positions_are_the_next_offset_of_each_topic_partition() -> None:
    graph = define_group(
        "p",
        Input("a", INT, lambda ctx, n: None),
        Input("b", INT, lambda ctx, n: None),
        Loop(INT, lambda ctx, n: None),
    )
    result = PartitionCore(graph, 3).process(
        [
            msg("k", INT.encode(1), 10, "a", partition=3),
            msg("k", INT.encode(1), 4, "b", partition=3),
            msg("k", INT.encode(1), 11, "a", partition=3),
            msg("k", INT.encode(1), 0, "p-loop", partition=3),
            msg("k", INT.encode(1), 15, "a", partition=3),
        ]
    )
    assert result.positions == {("a", 3): 16, ("b", 3): 5, ("p-loop", 3): 1}


def test_an_empty_batch_has_no_effects() -> None:
    result = core().process([])
    assert (result.table_writes, result.emits, result.positions, result.processed) == (
        {},
        [],
        {},
        0,
    )


def test_a_message_without_a_key_is_skipped_and_counted_by_default() -> None:
    seen: list[str | None] = []
    graph = define_group("n", Input("nums", INT, lambda ctx, n: seen.append(ctx.key)))
    core = PartitionCore(graph, 0)
    result = core.process([msg(None, INT.encode(1), 0), msg("k", INT.encode(2), 1)])
    assert seen == ["k"]
    assert (result.skipped, result.null_keys, result.processed) == (1, 1, 1)
    assert result.positions == {("nums", 0): 2}
    assert (core.stats.skipped, core.stats.null_keys) == (1, 1)


# -- failures ------------------------------------------------------------------------------


def test_a_failure_mid_batch_keeps_the_effects_of_earlier_messages_only() -> None:
    result = core().process(
        [num("a", 1, 0), num("b", 2, 1), num("b", -1, 2), num("c", 5, 3), num("a", 1, 4)]
    )
    assert result.table_writes == {b"a": INT.encode(1), b"b": INT.encode(2)}
    assert [(m.key, m.value) for m in result.emits] == [
        (b"a", INT.encode(1)),
        (b"b", INT.encode(2)),
    ]
    assert result.positions == {("nums", 0): 2}
    assert result.processed == 2


def test_a_failure_carries_the_coordinates_and_the_original_exception() -> None:
    result = core().process([num("a", 1, 7), num("b", -1, 8)])
    failure = result.failure
    assert isinstance(failure, ProcessingError)
    assert (failure.group, failure.topic, failure.partition, failure.offset, failure.key) == (
        "sum",
        "nums",
        0,
        8,
        "b",
    )
    assert isinstance(failure.error, ValueError) and failure.__cause__ is failure.error
    assert str(failure) == "group 'sum' failed on nums[0]@8 key='b': ValueError: negative: -1"


def test_messages_after_a_failure_are_not_run() -> None:
    seen: list[int] = []

    def record(ctx: Context, n: int) -> None:
        seen.append(n)
        if n == 2:
            raise RuntimeError("stop")

    graph = define_group("r", Input("nums", INT, record))
    PartitionCore(graph, 0).process([num("k", 1, 0), num("k", 2, 1), num("k", 3, 2)])
    assert seen == [1, 2]


def test_the_failing_message_leaves_no_pending_write() -> None:
    reads: list[Any] = []

    def write_then_fail(ctx: Context, n: int) -> None:
        reads.append(ctx.value())
        ctx.set_value(n)
        if n < 0:
            raise ValueError("after the write")

    c = PartitionCore(define_group("w", Input("nums", INT, write_then_fail), Persist(INT)), 0)
    c.process([num("k", 1, 0), num("k", -5, 1)])
    c.process([num("k", 2, 1)])  # the next batch reads the last successful write
    assert reads == [None, 1, 1]


def test_a_message_of_a_topic_the_group_does_not_consume_fails_the_batch() -> None:
    result = core().process([num("a", 1, 0), num("a", 1, 0, topic="other")])
    assert isinstance(result.failure, ProcessingError)
    assert isinstance(result.failure.error, ContextError)
    assert "group 'sum' does not consume 'other'" in str(result.failure)
    assert result.positions == {("nums", 0): 1}


@pytest.mark.parametrize(
    "stop",
    [msg("k", b"bad", 2), msg(None, INT.encode(1), 2), msg("k", INT.encode(1), 2, topic="other")],
    ids=["undecodable", "keyless", "unconsumed topic"],
)
def test_a_batch_that_stops_early_counts_the_messages_before_the_stop(stop: InputMessage) -> None:
    c = core(null_key="fail")
    result = c.process([num("a", 1, 0), num("b", 2, 1), stop, num("c", 3, 3)])
    assert result.failure is not None and result.failure.offset == 2
    assert result.positions == {("nums", 0): 2}
    assert (result.processed, result.table_writes) == (
        2,
        {b"a": INT.encode(1), b"b": INT.encode(2)},
    )
    assert (c.stats.processed, c.stats.table_writes, c.stats.emitted) == (2, 2, 2)
    c.process([num("c", 3, 3)])
    assert c.stats.processed == 3


def test_processing_error_keeps_its_coordinates_through_pickling() -> None:
    failure = core().process([num("b", -1, 3)]).failure
    copy = pickle.loads(pickle.dumps(failure))
    assert (copy.group, copy.topic, copy.partition, copy.offset, copy.key) == (
        "sum",
        "nums",
        0,
        3,
        "b",
    )
    assert isinstance(copy.error, ValueError) and str(copy) == str(failure)


# -- pending writes and commit -------------------------------------------------------------


def test_pending_writes_are_visible_to_later_batches_before_commit() -> None:
    c = core()
    c.process([num("a", 1, 0)])
    second = c.process([num("a", 2, 1)])
    assert second.table_writes == {b"a": INT.encode(3)}
    assert stored(c) == {}
    assert c.has_pending


def test_commit_writes_the_batch_and_changelog_offset_to_storage(leveldb: LevelDBStorage) -> None:
    c = core(leveldb)
    result = c.process([num("a", 1, 0), num("b", 2, 1)])
    c.commit(result, 17)
    assert read_all(leveldb) == {b"a": INT.encode(1), b"b": INT.encode(2)}
    assert leveldb.offset() == 17 and leveldb.key_count() == 2
    assert not c.has_pending


def test_commit_of_a_tombstone_removes_the_key_from_storage(leveldb: LevelDBStorage) -> None:
    c = core(leveldb)
    c.commit(c.process([num("a", 1, 0), num("b", 1, 1)]), 2)
    c.commit(c.process([num("a", 0, 2)]), 3)
    assert read_all(leveldb) == {b"b": INT.encode(1)} and leveldb.key_count() == 1


def test_commit_without_an_offset_keeps_the_stored_offset(leveldb: LevelDBStorage) -> None:
    c = core(leveldb)
    c.commit(c.process([num("a", 1, 0)]), 5)
    c.commit(c.process([num("a", 1, 1)]))
    assert leveldb.offset() == 5 and leveldb.get(b"a") == INT.encode(2)


def test_commit_keeps_pending_a_key_that_a_later_batch_wrote_again() -> None:
    c = core()
    first = c.process([num("a", 1, 0), num("b", 1, 1)])
    second = c.process([num("a", 1, 2)])
    c.commit(first, 2)
    assert stored(c)[b"a"] == INT.encode(1)
    third = c.process([num("a", 1, 3)])  # reads the pending 2, not the stored 1
    assert third.table_writes == {b"a": INT.encode(3)}
    c.commit(second, 3)
    assert c.has_pending  # the third batch is still uncommitted
    c.commit(third, 4)
    assert not c.has_pending
    assert stored(c) == {b"a": INT.encode(3), b"b": INT.encode(1)}


def test_discard_pending_forgets_uncommitted_writes() -> None:
    c = core()
    c.commit(c.process([num("a", 1, 0)]), 1)
    c.process([num("a", 100, 1)])
    c.discard_pending()
    assert not c.has_pending
    assert c.process([num("a", 1, 2)]).table_writes == {b"a": INT.encode(2)}


def test_commit_on_a_group_without_a_table_does_nothing() -> None:
    graph = define_group(
        "e", Input("nums", INT, lambda ctx, n: ctx.emit("o", "k", n)), Output("o", INT)
    )
    c = PartitionCore(graph, 0)
    c.commit(c.process([num("a", 1, 0)]), 3)
    assert c.table is None and not c.has_pending


def test_a_new_core_on_reopened_leveldb_continues_from_the_committed_state(tmp_path: Path) -> None:
    storage = LevelDBStorage(tmp_path / "t")
    c = core(storage)
    c.commit(c.process([num("a", 1, 0), num("a", 2, 1)]), 2)
    c.process([num("a", 100, 2)])  # processed but never committed: lost on restart
    storage.close()
    storage = LevelDBStorage(tmp_path / "t")
    restarted = core(storage)
    assert restarted.table is not None and restarted.table.offset == 2
    assert restarted.process([num("a", 1, 2)]).table_writes == {b"a": INT.encode(4)}
    storage.close()


# -- recovery ------------------------------------------------------------------------------


def test_recover_writes_records_and_the_next_offset(leveldb: LevelDBStorage) -> None:
    c = core(leveldb)
    applied = c.recover([(b"a", INT.encode(1)), (b"b", INT.encode(2))], 2)
    assert applied == 2
    assert read_all(leveldb) == {b"a": INT.encode(1), b"b": INT.encode(2)}
    assert leveldb.offset() == 2 and c.table.offset == 2  # type: ignore[union-attr]


def test_recover_applies_later_records_over_earlier_ones_and_tombstones() -> None:
    c = core()
    c.recover([(b"gone", INT.encode(9))], 1)
    applied = c.recover(
        [
            (b"a", INT.encode(1)),
            (b"b", INT.encode(2)),
            (b"a", INT.encode(3)),
            (b"b", None),
            (b"gone", None),
        ],
        6,
    )
    assert applied == 5
    assert stored(c) == {b"a": INT.encode(3)}
    assert c.table is not None and c.table.offset == 6 and len(c.table) == 1


def test_recover_ignores_records_without_a_key() -> None:
    c = core()
    assert c.recover([(None, INT.encode(1)), (b"a", INT.encode(1))], 2) == 1
    assert stored(c) == {b"a": INT.encode(1)}


def test_recovered_values_are_what_callbacks_read() -> None:
    c = core()
    c.recover([(b"a", INT.encode(40))], 1)
    assert c.process([num("a", 2, 0)]).table_writes == {b"a": INT.encode(42)}


def test_recover_on_a_group_without_a_table_is_an_error() -> None:
    c = PartitionCore(define_group("n", Input("nums", INT, lambda ctx, n: None)), 0)
    with pytest.raises(ContextError, match="group 'n' has no table to recover"):
        c.recover([(b"a", b"1")], 1)


def join_graph(seen: list[Any]) -> Any:
    return define_group(
        "j",
        Input("nums", INT, lambda ctx, n: seen.append(ctx.join("users"))),
        Join("users", S),
    )


def test_recover_join_feeds_the_joined_table_that_ctx_join_reads(leveldb: LevelDBStorage) -> None:
    seen: list[Any] = []
    c = PartitionCore(join_graph(seen), 0, joins={"users": leveldb})
    applied = c.recover_join(
        "users", [(b"a", S.encode("Ann")), (b"b", S.encode("Bob")), (b"b", None)], 3
    )
    c.process([num("a", 1, 0), num("b", 1, 1)])
    assert applied == 3 and seen == ["Ann", None]
    assert leveldb.offset() == 3


def test_recover_join_of_an_undeclared_table_names_the_declared_joins() -> None:
    c = PartitionCore(join_graph([]), 0, joins={"users": MemoryStorage()})
    with pytest.raises(
        ValueError, match=r"declares no Join\('other'\) \(declared joins: 'users'\)"
    ):
        c.recover_join("other", [], 0)


def test_a_core_needs_a_storage_for_every_join() -> None:
    with pytest.raises(ValueError, match=r"no storage for joins \['users'\]"):
        PartitionCore(join_graph([]), 0)


def test_a_lookup_reads_the_connected_table_by_any_key() -> None:
    seen: list[Any] = []
    graph = define_group(
        "l",
        Input("nums", S, lambda ctx, item: seen.append(ctx.lookup("prices", item))),
        Lookup("prices", INT),
    )
    prices = MemoryStorage()
    prices.set(b"apple", INT.encode(3))
    c = PartitionCore(graph, 0, lookups={"prices": prices})
    c.process([msg("u", b"apple", 0), msg("u", b"pear", 1)])
    assert seen == [3, None]


def test_a_lookup_that_is_not_connected_yet_is_a_clear_error() -> None:
    graph = define_group(
        "l", Input("nums", S, lambda ctx, m: ctx.lookup("prices", m)), Lookup("prices", INT)
    )
    c = PartitionCore(graph, 0)
    failure = c.process([msg("u", b"apple", 0)]).failure
    assert failure is not None and "the lookup table is not connected" in str(failure)
    prices = MemoryStorage()
    c.connect_lookup("prices", prices)
    assert c.process([msg("u", b"apple", 0)]).failure is None


def test_connect_lookup_of_an_undeclared_table_is_an_error() -> None:
    graph = define_group("l", Input("nums", S, lambda ctx, m: None), Lookup("prices", INT))
    with pytest.raises(ValueError, match=r"declares no Lookup\('users'\)"):
        PartitionCore(graph, 0).connect_lookup("users", MemoryStorage())


# -- decode policies -----------------------------------------------------------------------


def test_fail_policy_fails_the_batch_at_an_undecodable_value() -> None:
    result = core().process([num("a", 1, 0), msg("b", b"bad", 1), num("c", 1, 2)])
    failure = result.failure
    assert isinstance(failure, ProcessingError)
    assert (failure.offset, failure.key) == (1, "b")
    assert isinstance(failure.error, CodecError)
    assert "Int codec cannot decode 3 bytes b'bad'" in str(failure)
    assert result.positions == {("nums", 0): 1} and result.table_writes == {b"a": INT.encode(1)}


def test_skip_policy_skips_an_undecodable_value_and_goes_on() -> None:
    result = core(on_decode_error="skip").process([msg("a", b"bad", 0), num("a", 2, 1)])
    assert result.failure is None
    assert (result.skipped, result.processed) == (1, 1)
    assert result.positions == {("nums", 0): 2}
    assert result.table_writes == {b"a": INT.encode(2)}


def test_dead_letter_policy_forwards_the_raw_message_with_error_headers() -> None:
    result = core(on_decode_error="dead_letter").process(
        [msg("a", b"bad", 5, headers=[("trace", b"t1")]), num("a", 2, 6)]
    )
    assert result.failure is None and (result.dead_lettered, result.processed) == (1, 1)
    letter = result.emits[0]
    assert (letter.topic, letter.key, letter.value) == ("sum-dlq", b"a", b"bad")
    headers = dict(letter.headers or [])
    assert headers["trace"] == b"t1"  # the original headers stay
    assert headers["goka-ray.topic"] == b"nums"
    assert headers["goka-ray.partition"] == b"0"
    assert headers["goka-ray.offset"] == b"5"
    assert headers["goka-ray.error"].startswith(b"Int codec cannot decode 3 bytes")
    assert result.positions == {("nums", 0): 7}


def test_dead_letters_keep_their_place_among_the_emits() -> None:
    result = core(on_decode_error="dead_letter").process(
        [num("a", 1, 0), msg("b", b"bad", 1), num("c", 2, 2)]
    )
    assert [(m.topic, m.key) for m in result.emits] == [
        ("totals", b"a"),
        ("sum-dlq", b"b"),
        ("totals", b"c"),
    ]


class Strict:
    """A user codec that raises ValueError rather than CodecError."""

    def encode(self, value: int) -> bytes:
        return str(value).encode()

    def decode(self, data: bytes) -> int:
        return int(data)


def test_a_user_codec_raising_any_exception_fails_with_a_codec_error_naming_it() -> None:
    graph = define_group("u", Input("nums", Strict(), lambda ctx, n: None))
    failure = PartitionCore(graph, 0).process([msg("k", b"x1", 0)]).failure
    assert failure is not None and isinstance(failure.error, CodecError)
    assert isinstance(failure.error.__cause__, ValueError)
    assert "Strict codec cannot decode 2 bytes b'x1': ValueError" in str(failure)


@pytest.mark.parametrize("policy", ["skip", "dead_letter"])
def test_a_user_codec_raising_any_exception_follows_the_policy(policy: Any) -> None:
    graph = define_group("u", Input("nums", Strict(), lambda ctx, n: None, on_decode_error=policy))
    result = PartitionCore(graph, 0).process([msg("k", b"x1", 0), msg("k", b"12", 1)])
    assert result.failure is None and result.processed == 1
    assert result.skipped + result.dead_lettered == 1


def test_the_loop_decode_policy_applies_to_the_loop_topic() -> None:
    graph = define_group(
        "lp",
        Input("nums", INT, lambda ctx, n: None),
        Loop(INT, lambda ctx, n: None, on_decode_error="dead_letter"),
    )
    result = PartitionCore(graph, 0).process([msg("k", b"bad", 0, "lp-loop")])
    assert [(m.topic, m.value) for m in result.emits] == [("lp-dlq", b"bad")]


def test_a_key_that_is_not_utf8_is_processed_as_lossless_text() -> None:
    seen: list[tuple[str | None, bytes | None]] = []

    def count(ctx: Context, n: int) -> None:
        seen.append((ctx.key, ctx.key_bytes))
        ctx.set_value((ctx.value() or 0) + n)
        ctx.emit("totals", ctx.key, n)

    graph = define_group("sum", Input("nums", INT, count), Persist(INT), Output("totals", INT))
    core = PartitionCore(graph, 0)
    result = core.process([msg(b"\xff\xfe", INT.encode(1), 3), msg(b"\xff\xfe", INT.encode(2), 4)])
    assert result.failure is None and result.processed == 2
    assert seen == [("\udcff\udcfe", b"\xff\xfe")] * 2
    assert result.table_writes == {b"\xff\xfe": INT.encode(3)}
    assert [m.key for m in result.emits] == [b"\xff\xfe", b"\xff\xfe"]


# -- nil policies --------------------------------------------------------------------------


def nil_core(policy: Any, seen: list[Any], codec: Any = None) -> PartitionCore:
    graph = define_group(
        "n", Input("nums", codec or codecs.Bytes(), lambda ctx, v: seen.append(v), nil=policy)
    )
    return PartitionCore(graph, 0)


def test_nil_ignore_drops_a_null_value_and_advances_the_position() -> None:
    seen: list[Any] = []
    result = nil_core("ignore", seen).process([msg("a", None, 0), msg("a", b"x", 1)])
    assert seen == [b"x"]
    assert (result.skipped, result.processed, result.positions) == (1, 1, {("nums", 0): 2})


def test_nil_process_passes_none_to_the_callback() -> None:
    seen: list[Any] = []
    result = nil_core("process", seen, INT).process([msg("a", None, 0)])
    assert seen == [None] and result.processed == 1


def test_nil_decode_decodes_empty_bytes() -> None:
    seen: list[Any] = []
    nil_core("decode", seen, S).process([msg("a", None, 0)])
    assert seen == [""]


def test_nil_decode_with_a_codec_that_cannot_decode_empty_bytes_follows_the_decode_policy() -> None:
    graph = define_group(
        "n", Input("nums", INT, lambda ctx, v: None, nil="decode", on_decode_error="skip")
    )
    result = PartitionCore(graph, 0).process([msg("a", None, 0)])
    assert (result.skipped, result.failure) == (1, None)


def test_an_empty_value_is_not_null() -> None:
    seen: list[Any] = []
    nil_core("ignore", seen).process([msg("a", b"", 0)])
    assert seen == [b""]


def test_a_null_value_on_the_loop_topic_reaches_the_loop_callback() -> None:
    seen: list[Any] = []
    graph = define_group(
        "lp", Input("nums", INT, lambda ctx, n: None), Loop(INT, lambda ctx, n: seen.append(n))
    )
    result = PartitionCore(graph, 0).process([msg("k", None, 0, "lp-loop")])
    assert seen == [None] and result.processed == 1


# -- stats ---------------------------------------------------------------------------------


def test_stats_count_over_every_batch() -> None:
    c = core(on_decode_error="dead_letter")
    c.process([num("a", 1, 0), num("a", 2, 1), msg("a", b"bad", 2), msg("a", None, 3)])
    c.process([num("b", 1, 4), num("b", -1, 5)])
    stats = c.stats
    assert (stats.processed, stats.skipped, stats.dead_lettered) == (3, 1, 1)
    assert stats.emitted == 3  # callback emits only; the dead letter is counted apart
    assert stats.table_writes == 2  # changelog records: one per key per batch
