"""Context: every attribute and method a callback uses, and the errors of misusing them."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from goka_ray import (
    CallbackFailed,
    CodecError,
    Context,
    ContextError,
    GroupGraph,
    Input,
    Join,
    Lookup,
    Loop,
    Output,
    PartitionCore,
    Persist,
    ProcessingError,
    Tester,
    codecs,
    define_group,
    table,
)
from goka_ray.core.messages import Headers, InputMessage
from goka_ray.core.partitioner import MURMUR2
from goka_ray.core.storage import MemoryStorage

S, INT, JSON = codecs.String(), codecs.Int(), codecs.Json()


def message(
    key: str = "k",
    value: str = "v",
    offset: int = 0,
    headers: Headers | None = None,
    topic: str = "in",
    partition: int = 0,
    timestamp: int = 0,
) -> InputMessage:
    return InputMessage(topic, partition, offset, key.encode(), S.encode(value), timestamp, headers)


def run(graph: GroupGraph, *messages: InputMessage, partition: int = 0, **core_options: Any) -> Any:
    """Process messages on a fresh core; return the result (raising its failure)."""
    result = PartitionCore(graph, partition, **core_options).process(list(messages))
    if result.failure is not None:
        raise result.failure
    return result


def failure_of(graph: GroupGraph, *messages: InputMessage, **core_options: Any) -> ProcessingError:
    with pytest.raises(ProcessingError) as info:
        run(graph, *messages or (message(),), **core_options)
    return info.value


# -- message metadata ----------------------------------------------------------------------


def test_context_exposes_the_message_coordinates_and_group() -> None:
    seen: list[tuple[Any, ...]] = []

    def look(ctx: Context, msg: str) -> None:
        seen.append((ctx.key, ctx.topic, ctx.partition, ctx.offset, ctx.timestamp, ctx.group))

    graph = define_group("meta", Input("in", S, look))
    run(graph, message("user-1", offset=41, partition=2, timestamp=1_700_000_000_123), partition=2)
    assert seen == [("user-1", "in", 2, 41, 1_700_000_000_123, "meta")]


def test_context_passes_the_decoded_value_as_msg() -> None:
    seen: list[Any] = []
    graph = define_group("v", Input("in", JSON, lambda ctx, m: seen.append(m)))
    run(graph, InputMessage("in", 0, 0, b"k", b'{"a": [1, 2]}'))
    assert seen == [{"a": [1, 2]}]


def test_tester_partition_is_the_murmur2_partition_of_the_key_and_offsets_count_up() -> None:
    seen: list[tuple[str, int, int]] = []
    graph = define_group(
        "m", Input("in", S, lambda ctx, m: seen.append((ctx.key, ctx.partition, ctx.offset)))
    )
    t = Tester(graph, partitions=8)
    for key in ["a", "b", "a", "c", "a"]:
        t.consume("in", key, "v")
    parts = {k: MURMUR2.partition(k.encode(), 8) for k in "abc"}
    counts: dict[int, int] = {}
    expected = []
    for key in ["a", "b", "a", "c", "a"]:
        p = parts[key]
        expected.append((key, p, counts.get(p, 0)))
        counts[p] = counts.get(p, 0) + 1
    assert seen == expected


def test_headers_are_a_dict_of_bytes() -> None:
    seen: list[dict[str, bytes]] = []
    graph = define_group("h", Input("in", S, lambda ctx, m: seen.append(ctx.headers)))
    run(graph, message(headers=[("trace", b"abc"), ("empty", b"")]))
    assert seen == [{"trace": b"abc", "empty": b""}]


def test_headers_are_empty_when_the_message_has_none() -> None:
    seen: list[dict[str, bytes]] = []
    graph = define_group("h", Input("in", S, lambda ctx, m: seen.append(ctx.headers)))
    run(graph, message(headers=None))
    assert seen == [{}]


def test_a_repeated_header_name_reads_as_its_last_value() -> None:
    seen: list[dict[str, bytes]] = []
    graph = define_group("h", Input("in", S, lambda ctx, m: seen.append(ctx.headers)))
    run(graph, message(headers=[("h", b"1"), ("h", b"2")]))
    assert seen == [{"h": b"2"}]


def test_a_null_header_value_reads_as_empty_bytes() -> None:
    seen: list[dict[str, bytes]] = []
    graph = define_group("h", Input("in", S, lambda ctx, m: seen.append(ctx.headers)))
    run(graph, message(headers=[("h", None)]))  # type: ignore[list-item]
    assert seen == [{"h": b""}]


def test_tester_passes_headers_given_as_str_or_bytes() -> None:
    seen: list[dict[str, bytes]] = []
    graph = define_group("h", Input("in", S, lambda ctx, m: seen.append(ctx.headers)))
    Tester(graph).consume("in", "k", "v", headers={"a": "text", "b": b"\x00\xff"})
    assert seen == [{"a": b"text", "b": b"\x00\xff"}]


def test_repr_shows_group_coordinates_and_key() -> None:
    seen: list[str] = []
    graph = define_group("r", Input("in", S, lambda ctx, m: seen.append(repr(ctx))))
    run(graph, message("k1", offset=9, partition=1), partition=1)
    assert seen == ["Context(group='r', in[1]@9, key='k1')"]


# -- the group table -----------------------------------------------------------------------


def table_graph(callback: Callable[[Context, str], None], codec: Any = INT) -> GroupGraph:
    return define_group("tbl", Input("in", S, callback), Persist(codec))


def test_value_is_none_for_a_key_not_in_the_table() -> None:
    seen: list[Any] = []
    run(table_graph(lambda ctx, m: seen.append(ctx.value())), message())
    assert seen == [None]


def test_value_reads_the_stored_value_of_the_message_key() -> None:
    storage = MemoryStorage()
    storage.set(b"k", INT.encode(41))
    storage.set(b"other", INT.encode(1))
    seen: list[Any] = []
    run(table_graph(lambda ctx, m: seen.append(ctx.value())), message("k"), storage=storage)
    assert seen == [41]


def test_set_value_writes_the_encoded_value_for_the_message_key() -> None:
    result = run(table_graph(lambda ctx, m: ctx.set_value(len(m))), message("k", "four"))
    assert result.table_writes == {b"k": INT.encode(4)}


def test_delete_writes_a_tombstone_even_for_an_absent_key() -> None:
    result = run(table_graph(lambda ctx, m: ctx.delete()), message("k"))
    assert result.table_writes == {b"k": None}


def test_a_callback_reads_its_own_set_value_and_delete() -> None:
    seen: list[Any] = []

    def steps(ctx: Context, m: str) -> None:
        ctx.set_value(1)
        seen.append(ctx.value())
        ctx.set_value(2)
        seen.append(ctx.value())
        ctx.delete()
        seen.append(ctx.value())
        ctx.set_value(3)

    result = run(table_graph(steps), message())
    assert seen == [1, 2, None]
    assert result.table_writes == {b"k": INT.encode(3)}


def test_a_callback_reads_the_writes_of_earlier_messages_in_the_same_batch() -> None:
    seen: list[Any] = []

    def count(ctx: Context, m: str) -> None:
        seen.append(ctx.value())
        ctx.set_value((ctx.value() or 0) + 1)

    run(table_graph(count), message("a"), message("b", offset=1), message("a", offset=2))
    assert seen == [None, None, 1]


def test_a_delete_of_an_earlier_message_in_the_batch_reads_as_none() -> None:
    seen: list[Any] = []

    def op(ctx: Context, m: str) -> None:
        if m == "del":
            ctx.delete()
        elif m == "set":
            ctx.set_value(5)
        else:
            seen.append(ctx.value())

    storage = MemoryStorage()
    storage.set(b"k", INT.encode(1))
    run(
        table_graph(op),
        message(value="read"),
        message(value="del", offset=1),
        message(value="read", offset=2),
        message(value="set", offset=3),
        message(value="read", offset=4),
        storage=storage,
    )
    assert seen == [1, None, 5]


def test_set_value_with_empty_headers_writes_no_headers_or_only_the_defaults() -> None:
    graph = table_graph(lambda ctx, m: ctx.set_value(1, headers={}))
    result = run(graph, message())
    assert result.table_headers == {} and result.changelog()[0].headers is None
    result = run(graph, message(), default_headers={"app": "x"})
    assert result.changelog()[0].headers == [("app", b"x")]


class EmptyLooking:
    """A user's JSON codec that is falsy, as a container of no items is."""

    def __len__(self) -> int:
        return 0

    def encode(self, value: Any) -> bytes:
        return JSON.encode(value)

    def decode(self, data: bytes) -> Any:
        return JSON.decode(data)


class FalseLooking(EmptyLooking):
    def __bool__(self) -> bool:
        return False


@pytest.mark.parametrize("codec", [EmptyLooking(), FalseLooking()], ids=lambda c: type(c).__name__)
def test_a_falsy_codec_object_is_the_group_tables_codec_all_the_same(codec: Any) -> None:
    seen: list[Any] = []

    def step(ctx: Context, m: str) -> None:
        seen.append(ctx.value())
        if m == "del":
            ctx.delete()
        else:
            ctx.set_value({"m": m})

    storage = MemoryStorage()
    storage.set(b"k", JSON.encode({"m": "old"}))
    result = run(
        table_graph(step, codec),
        message(value="new"),
        message(value="del", offset=1),
        message(value="again", offset=2),
        storage=storage,
    )
    assert seen == [{"m": "old"}, {"m": "new"}, None]
    assert result.table_writes == {b"k": JSON.encode({"m": "again"})}


def test_value_returns_a_fresh_copy_so_mutating_it_changes_nothing() -> None:
    seen: list[Any] = []

    def mutate(ctx: Context, m: str) -> None:
        ctx.value()["touched"] = True  # no set_value: must not reach the table
        seen.append(ctx.value())

    storage = MemoryStorage()
    storage.set(b"k", JSON.encode({"n": 1}))
    result = run(table_graph(mutate, JSON), message(), storage=storage)
    assert seen == [{"n": 1}] and result.table_writes == {}


def test_set_value_stores_the_value_as_it_was_when_called() -> None:
    def set_then_mutate(ctx: Context, m: str) -> None:
        v = {"items": [1]}
        ctx.set_value(v)
        v["items"].append(2)

    result = run(table_graph(set_then_mutate, JSON), message())
    assert JSON.decode(result.table_writes[b"k"]) == {"items": [1]}


def test_set_value_none_is_refused_pointing_to_delete() -> None:
    failure = failure_of(table_graph(lambda ctx, m: ctx.set_value(None)))
    assert isinstance(failure.error, ContextError)
    assert "ctx.set_value(None): a table value cannot be None; use ctx.delete()" in str(
        failure.error
    )


def test_set_value_of_a_value_the_table_codec_cannot_encode_fails_with_a_codec_error() -> None:
    failure = failure_of(table_graph(lambda ctx, m: ctx.set_value("not an int")))
    assert isinstance(failure.error, CodecError)
    assert "Int codec cannot encode str" in str(failure.error)


def test_value_of_stored_bytes_the_table_codec_cannot_decode_fails_with_a_codec_error() -> None:
    storage = MemoryStorage()
    storage.set(b"k", b"garbage")
    failure = failure_of(table_graph(lambda ctx, m: ctx.value()), storage=storage)
    assert isinstance(failure.error, CodecError)
    assert "Int codec cannot decode 7 bytes b'garbage'" in str(failure.error)


# -- emit and loopback ---------------------------------------------------------------------


def emit_graph(callback: Callable[[Context, str], None]) -> GroupGraph:
    return define_group(
        "em",
        Input("in", S, callback),
        Output("out", JSON),
        Output("other", S),
        Loop(INT, lambda ctx, n: None),
    )


def test_emit_produces_the_encoded_value_to_the_output_under_the_key() -> None:
    result = run(emit_graph(lambda ctx, m: ctx.emit("out", "target", {"m": m})), message())
    [out] = result.emits
    assert (out.topic, out.key, out.value, out.headers) == ("out", b"target", b'{"m":"v"}', None)


def test_emit_encodes_with_the_codec_of_each_output() -> None:
    def both(ctx: Context, m: str) -> None:
        ctx.emit("out", "k", [1])
        ctx.emit("other", "k", "plain")

    result = run(emit_graph(both), message())
    assert [(m.topic, m.value) for m in result.emits] == [("out", b"[1]"), ("other", b"plain")]


def test_emit_none_produces_a_tombstone() -> None:
    result = run(emit_graph(lambda ctx, m: ctx.emit("out", "k", None)), message())
    assert result.emits[0].value is None


def test_emit_headers_accept_str_and_bytes_values() -> None:
    result = run(
        emit_graph(lambda ctx, m: ctx.emit("out", "k", 1, headers={"a": "x", "b": b"\x01"})),
        message(),
    )
    assert result.emits[0].headers == [("a", b"x"), ("b", b"\x01")]


def test_emit_encodes_the_value_as_it_was_when_called() -> None:
    def emit_then_mutate(ctx: Context, m: str) -> None:
        v = [1]
        ctx.emit("out", "k", v)
        v.append(2)

    assert run(emit_graph(emit_then_mutate), message()).emits[0].value == b"[1]"


def test_emit_of_a_value_the_output_codec_cannot_encode_fails_with_a_codec_error() -> None:
    failure = failure_of(emit_graph(lambda ctx, m: ctx.emit("other", "k", 5)))
    assert isinstance(failure.error, CodecError)


def test_emit_with_a_header_value_that_is_not_text_or_bytes_fails() -> None:
    failure = failure_of(emit_graph(lambda ctx, m: ctx.emit("out", "k", 1, headers={"h": 5})))  # type: ignore[dict-item]
    assert "header 'h' value 5 must be str or bytes" in str(failure.error)


def test_loopback_sends_to_the_loop_topic_with_the_loop_codec() -> None:
    result = run(
        emit_graph(lambda ctx, m: ctx.loopback("elsewhere", 7, headers={"via": "loop"})), message()
    )
    [out] = result.emits
    assert (out.topic, out.key, out.value, out.headers) == (
        "em-loop",
        b"elsewhere",
        INT.encode(7),
        [("via", b"loop")],
    )


def test_loopback_of_a_value_the_loop_codec_cannot_encode_fails() -> None:
    failure = failure_of(emit_graph(lambda ctx, m: ctx.loopback("k", "not an int")))
    assert isinstance(failure.error, CodecError)


def test_effects_of_a_callback_that_raises_are_dropped() -> None:
    def emit_then_raise(ctx: Context, m: str) -> None:
        ctx.emit("out", "k", 1)
        ctx.loopback("k", 1)
        raise RuntimeError("boom")

    core = PartitionCore(emit_graph(emit_then_raise), 0)
    result = core.process([message()])
    assert result.failure is not None and result.emits == [] and result.positions == {}


# -- joins and lookups ---------------------------------------------------------------------


def test_join_reads_the_message_key_in_the_joined_table() -> None:
    seen: list[Any] = []
    graph = define_group(
        "j", Input("in", S, lambda ctx, m: seen.append(ctx.join("users"))), Join("users", JSON)
    )
    users = MemoryStorage()
    users.set(b"k", JSON.encode({"name": "Ann"}))
    run(graph, message("k"), message("unknown", offset=1), joins={"users": users})
    assert seen == [{"name": "Ann"}, None]


def test_lookup_reads_any_key_of_the_lookup_table() -> None:
    seen: list[Any] = []
    graph = define_group(
        "l",
        Input("in", S, lambda ctx, m: seen.append(ctx.lookup("prices", m))),
        Lookup("prices", INT),
    )
    prices = MemoryStorage()
    prices.set(b"apple", INT.encode(3))
    run(graph, message("u", "apple"), message("u", "pear", 1), lookups={"prices": prices})
    assert seen == [3, None]


# -- misuse: every undeclared edge is named ------------------------------------------------


@pytest.mark.parametrize(
    ("action", "message_pattern"),
    [
        (
            lambda ctx: ctx.emit("nowhere", "k", "v"),
            r"ctx.emit\('nowhere', ...\): group 'x' declares no Output\('nowhere'\); "
            r"add Output\('nowhere', codec\) to define_group \(declared outputs: 'out'\)",
        ),
        (lambda ctx: ctx.emit("in", "k", "v"), r"declares no Output\('in'\)"),
        (lambda ctx: ctx.emit("x-table", "k", "v"), r"declares no Output\('x-table'\)"),
        (
            lambda ctx: ctx.loopback("k", "v"),
            r"ctx.loopback\(\): group 'x' has no Loop edge; add Loop\(codec, callback\)",
        ),
        (
            lambda ctx: ctx.join("users"),
            r"ctx.join\('users'\): group 'x' declares no Join\('users'\); add Join\('users', codec\)",
        ),
        (
            lambda ctx: ctx.lookup("users", "k"),
            r"ctx.lookup\('users', ...\): group 'x' declares no Lookup\('users'\); add Lookup\('users', codec\)",
        ),
        (lambda ctx: ctx.value(), r"ctx.value\(\): group 'x' has no table; add Persist\(codec\)"),
        (lambda ctx: ctx.set_value("v"), r"ctx.set_value\(\): group 'x' has no table; add Persist"),
        (lambda ctx: ctx.set_value(None), r"ctx.set_value\(\): group 'x' has no table"),
        (lambda ctx: ctx.delete(), r"ctx.delete\(\): group 'x' has no table; add Persist"),
        (
            lambda ctx: ctx.emit("out", 5, "v"),
            r"ctx.emit\(\): a key must be str or bytes, not int 5",
        ),
        (
            lambda ctx: ctx.emit("out", 1.5, "v"),
            r"ctx.emit\(\): a key must be str or bytes, not float",
        ),
        (
            lambda ctx: ctx.emit("out", "\ud800", "v"),
            r"ctx.emit\(\): '\\ud800' cannot be a Kafka key",
        ),
    ],
)
def test_misusing_the_context_names_what_is_missing(
    action: Callable[[Context], Any], message_pattern: str
) -> None:
    graph = define_group("x", Input("in", S, lambda ctx, m: action(ctx)), Output("out", S))
    failure = failure_of(graph)
    assert isinstance(failure.error, ContextError)
    assert re.search(message_pattern, str(failure.error)), str(failure.error)


def test_emit_with_no_outputs_declared_says_none_are() -> None:
    graph = define_group("x", Input("in", S, lambda ctx, m: ctx.emit("o", "k", "v")))
    assert "(declared outputs: none)" in str(failure_of(graph).error)


def test_loopback_with_a_key_that_is_not_str_is_refused() -> None:
    graph = define_group(
        "x",
        Input("in", S, lambda ctx, m: ctx.loopback(1, "v")),  # type: ignore[arg-type]
        Loop(S, lambda c, m: None),
    )
    assert re.search(
        r"ctx.loopback\(\): a key must be str or bytes, not int", str(failure_of(graph).error)
    )


def test_loopback_without_a_key_is_refused() -> None:
    graph = define_group(
        "x",
        Input("in", S, lambda ctx, m: ctx.loopback(None, "v")),  # type: ignore[arg-type]
        Loop(S, lambda c, m: None),
    )
    assert "ctx.loopback(None, ...): the loop topic is keyed" in str(failure_of(graph).error)


def test_lookup_with_a_key_that_is_not_str_is_refused() -> None:
    graph = define_group("x", Input("in", S, lambda ctx, m: ctx.lookup("t", 1)), Lookup("t", S))  # type: ignore[arg-type]
    assert re.search(
        r"ctx.lookup\('t', ...\): a key must be str or bytes, not int 1",
        str(failure_of(graph).error),
    )


def test_misuse_raises_out_of_the_tester_consume_as_a_processing_error() -> None:
    graph = define_group("x", Input("in", S, lambda ctx, m: ctx.join("users")))
    with pytest.raises(ProcessingError, match=r"declares no Join\('users'\)") as info:
        Tester(graph).consume("in", "k", "v")
    assert isinstance(info.value.error, ContextError)


# -- fail ----------------------------------------------------------------------------------


def failing_graph(callback: Callable[[Context, str], None]) -> GroupGraph:
    return define_group("fl", Input("in", S, callback), Persist(S), Output("out", S))


def test_fail_with_a_string_fails_the_message_with_that_text() -> None:
    failure = failure_of(
        failing_graph(lambda ctx, m: ctx.fail("bad order")), message("k7", offset=12)
    )
    assert (failure.group, failure.topic, failure.partition, failure.offset, failure.key) == (
        "fl",
        "in",
        0,
        12,
        "k7",
    )
    assert isinstance(failure.error, CallbackFailed) and str(failure.error) == "bad order"
    assert str(failure) == "group 'fl' failed on in[0]@12 key='k7': CallbackFailed: bad order"


def test_fail_with_an_exception_carries_the_exception_itself() -> None:
    error = ValueError("price below zero")
    failure = failure_of(failing_graph(lambda ctx, m: ctx.fail(error)), message("k2", offset=4))
    assert (failure.group, failure.topic, failure.partition, failure.offset, failure.key) == (
        "fl",
        "in",
        0,
        4,
        "k2",
    )
    assert failure.error is error and failure.__cause__ is error
    assert str(failure).endswith("ValueError: price below zero")


def test_code_after_fail_does_not_run_and_nothing_of_the_callback_is_applied() -> None:
    after: list[str] = []

    def fail_midway(ctx: Context, m: str) -> None:
        ctx.set_value("written")
        ctx.emit("out", "k", "emitted")
        ctx.fail("stop")
        after.append("ran")

    result = PartitionCore(failing_graph(fail_midway), 0).process([message()])
    assert isinstance(result.failure, ProcessingError)
    assert (result.table_writes, result.emits, after) == ({}, [], [])


def test_a_raising_callback_fails_with_its_exception_and_coordinates() -> None:
    def explode(ctx: Context, m: str) -> None:
        raise KeyError("missing")

    failure = failure_of(failing_graph(explode), message("k", offset=3))
    assert isinstance(failure.error, KeyError) and (failure.offset, failure.key) == (3, "k")


def test_fail_in_the_tester_raises_out_of_consume_with_the_coordinates() -> None:
    t = Tester(failing_graph(lambda ctx, m: ctx.fail("nope")), partitions=1)
    with pytest.raises(ProcessingError, match="CallbackFailed: nope") as info:
        t.consume("in", "k", "v")
    assert (info.value.group, info.value.topic, info.value.key, info.value.offset) == (
        "fl",
        "in",
        "k",
        0,
    )
    assert t.table_value(table("fl"), "k") is None


# -- the hand-over -------------------------------------------------------------------------


def test_a_context_kept_past_its_callback_can_no_longer_act() -> None:
    kept: list[Context] = []

    def keep(ctx: Context, msg: str) -> None:
        kept.append(ctx)
        ctx.set_value(msg)

    graph = define_group("k", Input("in", S, keep), Persist(S), Output("out", S))
    core = PartitionCore(graph, 0)
    result = core.process([message("a", "1", 0), message("b", "2", 1)])
    assert result.table_writes == {b"a": b"1", b"b": b"2"}
    stale = kept[0]
    for act in (
        lambda: stale.set_value("late"),
        lambda: stale.delete(),
        lambda: stale.emit("out", "a", "late"),
        lambda: stale.defer_commit(),
        lambda: stale.value(),
    ):
        with pytest.raises(ContextError, match="this Context's callback has returned"):
            act()
    # the next message's effects are its own
    result = core.process([message("c", "3", 2)])
    assert result.table_writes == {b"c": b"3"} and result.emits == []


def test_the_effects_of_a_raising_callback_are_dropped_and_its_context_closed() -> None:
    kept: list[Context] = []

    def fail_after_writing(ctx: Context, msg: str) -> None:
        kept.append(ctx)
        ctx.set_value(msg)
        ctx.emit("out", ctx.key, msg)
        raise ValueError("no")

    graph = define_group(
        "k", Input("in", S, fail_after_writing, on_error="skip"), Persist(S), Output("out", S)
    )
    result = PartitionCore(graph, 0).process([message("a", "1", 0)])
    assert (result.skipped, result.table_writes, result.emits) == (1, {}, [])
    with pytest.raises(ContextError):
        kept[0].set_value("x")
