"""Keys in the core and the Tester: bytes-safe end to end, and messages without a key.

A Goka service sharing a topic may write keys that are not UTF-8 (Go strings are bytes); a
Kafka producer may write no key at all. Every such record is handled on purpose: keys reach
user code as lossless text (plus ``ctx.key_bytes``) and go back to Kafka as the same bytes;
keyless messages follow the input's ``null_key`` policy and never put a table value where no
reader looks.
"""

from __future__ import annotations

from typing import Any

import pytest

from goka_ray import (
    Context,
    ContextError,
    Input,
    Join,
    Lookup,
    Output,
    PartitionCore,
    Persist,
    ProcessingError,
    Tester,
    Visitor,
    codecs,
    define_group,
    table,
)
from goka_ray.core.keys import decode_key, encode_key
from goka_ray.core.messages import InputMessage
from goka_ray.core.partitioner import MURMUR2
from goka_ray.core.tables import ChangelogRecord
from goka_ray.errors import GraphError

S, INT = codecs.String(), codecs.Int()
MAC = b"\x00\x85mac"  # a key Goka wrote: not UTF-8


def count(ctx: Context, msg: Any) -> None:
    ctx.set_value((ctx.value() or 0) + 1)


# -- the key codec -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw", [MAC, b"", b"alice", "ünï".encode(), b"\xff" * 3, bytes(range(256))]
)
def test_every_key_round_trips_through_its_text(raw: bytes) -> None:
    assert encode_key(decode_key(raw)) == raw


def test_utf8_keys_read_as_their_text_and_other_bytes_as_lone_surrogates() -> None:
    assert decode_key("ünï".encode()) == "ünï"
    assert decode_key(MAC) == "\x00\udc85mac"


def test_a_key_that_is_neither_str_nor_bytes_or_that_names_no_bytes_is_refused() -> None:
    with pytest.raises(TypeError, match="get: a key must be str or bytes, not int 5"):
        encode_key(5, "get")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cannot be a Kafka key"):
        encode_key("\ud800")  # a surrogate that stands for no byte


# -- keys that are not UTF-8 -------------------------------------------------------------------


def test_a_visitor_reads_every_value_of_a_table_recovered_with_a_goka_key() -> None:
    seen: list[tuple[str, bytes | None, Any]] = []
    graph = define_group(
        "macs",
        Input("in", S, count),
        Persist(INT),
        Visitor("read", lambda ctx, meta: seen.append((ctx.key, ctx.key_bytes, ctx.value()))),
    )
    core = PartitionCore(graph, 0)
    core.recover([(MAC, INT.encode(7)), (b"bob", INT.encode(2))], 2)
    result = core.visit("read")
    assert result.failure is None and result.visited == 2
    assert seen == [("\x00\udc85mac", MAC, 7), ("bob", b"bob", 2)]


def test_an_input_key_that_is_not_utf8_is_counted_under_its_own_bytes() -> None:
    t = Tester(define_group("c", Input("in", S, count), Persist(INT)))
    t.consume_raw("in", MAC, b"x")
    t.consume("in", MAC, "y")
    t.consume("in", decode_key(MAC), "z")  # the text of the key is the same key
    assert t.table_value(table("c"), MAC) == 3
    assert t.table_value(table("c"), "\x00\udc85mac") == 3
    assert t.table_items(table("c")) == {"\x00\udc85mac": 3}
    changelog = t.messages(table("c"))
    assert {m.key_bytes for m in changelog} == {MAC}
    assert {m.partition for m in changelog} == {MURMUR2.partition(MAC, 4)}


def test_emits_and_loopbacks_pass_the_key_bytes_on_unchanged() -> None:
    graph = define_group(
        "fwd",
        Input("in", S, lambda ctx, m: ctx.emit("out", ctx.key, m)),
        Output("out", S),
    )
    t = Tester(graph)
    t.consume("in", MAC, "hi")
    [out] = t.messages("out")
    assert (out.key_bytes, out.value, out.partition) == (MAC, "hi", MURMUR2.partition(MAC, 4))


def test_joins_and_lookups_find_keys_that_are_not_utf8() -> None:
    seen: list[tuple[Any, Any, Any]] = []

    def look(ctx: Context, m: str) -> None:
        seen.append((ctx.join("macs"), ctx.lookup("names", ctx.key), ctx.lookup("names", MAC)))

    graph = define_group("j", Input("in", S, look), Join("macs", INT), Lookup("names", S))
    t = Tester(graph)
    t.set_table_value("macs", MAC, 5)
    t.set_table_value("names", "\x00\udc85mac", "router")
    t.consume("in", MAC, "x")
    assert seen == [(5, "router", "router")]


def test_a_tombstone_for_a_goka_key_deletes_it() -> None:
    graph = define_group("d", Input("in", S, lambda ctx, m: ctx.delete()), Persist(INT))
    t = Tester(graph)
    t.set_table_value(table("d"), MAC, 1)
    t.consume("in", MAC, "drop")
    assert t.table_value(table("d"), MAC) is None
    assert [(m.key_bytes, m.raw) for m in t.messages(table("d"))] == [(MAC, None)]


# -- messages without a key --------------------------------------------------------------------


def keyless(offset: int = 0, partition: int = 2) -> InputMessage:
    return InputMessage("in", partition, offset, None, S.encode("v"))


def test_by_default_a_message_without_a_key_is_skipped_counted_and_committed() -> None:
    calls: list[str] = []
    graph = define_group("n", Input("in", S, lambda ctx, m: calls.append(m)), Persist(INT))
    core = PartitionCore(graph, 2)
    result = core.process([keyless(0), keyless(1)])
    assert calls == [] and result.processed == 0
    assert (result.skipped, result.null_keys) == (2, 2)
    assert result.positions == {("in", 2): 2}
    assert result.table_writes == {} and result.emits == []
    assert (core.stats.skipped, core.stats.null_keys) == (2, 2)


def test_a_message_without_a_key_can_be_dead_lettered_at_its_partition() -> None:
    graph = define_group("n", Input("in", S, count, null_key="dead_letter"), Persist(INT))
    result = PartitionCore(graph, 2).process([keyless(7)])
    assert (result.dead_lettered, result.null_keys) == (1, 1)
    [dead] = result.emits
    assert (dead.topic, dead.key, dead.value, dead.partition) == ("n-dlq", None, b"v", 2)
    headers = dict(dead.headers or [])
    assert headers["goka-ray.stage"] == b"null_key"
    assert headers["goka-ray.offset"] == b"7"
    assert graph.uses_dead_letter()


def test_a_message_without_a_key_can_fail_the_partition() -> None:
    graph = define_group("n", Input("in", S, count, null_key="fail"), Persist(INT))
    failure = PartitionCore(graph, 2).process([keyless(4)]).failure
    assert failure is not None and (failure.topic, failure.offset, failure.key) == ("in", 4, None)
    assert "the message has no key" in str(failure)


def test_a_processed_message_without_a_key_can_emit_but_never_touch_the_table() -> None:
    seen: list[tuple[Any, Any]] = []

    def route(ctx: Context, m: str) -> None:
        seen.append((ctx.key, ctx.key_bytes))
        ctx.emit("out", ctx.key, m)  # a keyless message out
        if m == "store":
            ctx.set_value(1)

    graph = define_group(
        "n", Input("in", S, route, null_key="process"), Persist(INT), Output("out", S)
    )
    t = Tester(graph)
    t.consume("in", None, "pass", partition=3)
    assert seen == [(None, None)]
    [out] = t.messages("out")
    assert (out.key, out.value) == (None, "pass")
    with pytest.raises(ProcessingError) as info:
        t.consume("in", None, "store", partition=3)
    assert isinstance(info.value.error, ContextError)
    assert "has no key, so it has no table value" in str(info.value.error)
    assert t.table_items(table("n")) == {} and t.messages(table("n")) == []


@pytest.mark.parametrize(
    "action", [lambda ctx: ctx.value(), lambda ctx: ctx.delete(), lambda ctx: ctx.join("t")]
)
def test_every_table_read_and_write_of_a_keyless_message_is_refused(action: Any) -> None:
    graph = define_group(
        "n",
        Input("in", S, lambda ctx, m: action(ctx), null_key="process"),
        Persist(INT),
        Join("t", INT),
    )
    core = PartitionCore(graph, 0, joins={"t": __import__("goka_ray").MemoryStorage()})
    failure = core.process([keyless(0, partition=0)]).failure
    assert failure is not None and isinstance(failure.error, ContextError)


def test_an_unknown_null_key_policy_is_rejected_with_the_choices() -> None:
    with pytest.raises(GraphError, match=r"null_key='drop'; choose one of \('skip'"):
        Input("in", S, count, null_key="drop")  # type: ignore[arg-type]


def test_inputs_pass_the_null_key_policy_to_each_topic() -> None:
    from goka_ray import Inputs

    graph = define_group("n", Inputs(["a", "b"], S, count, null_key="process"))
    assert [i.null_key for i in graph.inputs] == ["process", "process"]


def test_a_changelog_record_without_a_key_is_not_a_table_value() -> None:
    graph = define_group("n", Input("in", S, count), Persist(INT))
    core = PartitionCore(graph, 0)
    core.recover(
        [ChangelogRecord(None, INT.encode(1), 0), ChangelogRecord(b"a", INT.encode(2), 1)], 2
    )
    assert core.table_keys() == ["a"]


def test_an_error_quoting_a_goka_key_is_dead_lettered_with_a_readable_header() -> None:
    def fussy(ctx: Context, m: str) -> None:
        raise ValueError(f"cannot count {ctx.key}")

    graph = define_group("f", Input("in", S, fussy, on_error="dead_letter"), Persist(INT))
    result = PartitionCore(graph, 0).process([InputMessage("in", 0, 0, MAC, b"x")])
    [dead] = result.emits
    assert dead.key == MAC
    assert dict(dead.headers or [])["goka-ray.error"] == b"ValueError: cannot count \x00\\udc85mac"


@pytest.mark.parametrize("policy", ["skip", "dead_letter", "fail"])
def test_an_error_quoting_a_goka_key_is_written_readable_in_logs_and_errors(
    policy: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever the policy, the log line and the error text quote the key's undecodable byte
    as \\udc85, so a UTF-8 log file, a terminal or a test runner can write them."""

    def fussy(ctx: Context, m: str) -> None:
        raise ValueError(f"cannot count {ctx.key}")

    graph = define_group("f", Input("in", S, fussy, on_error=policy), Persist(INT))
    result = PartitionCore(graph, 0).process([InputMessage("in", 0, 0, MAC, b"x")])
    texts = [r.getMessage() for r in caplog.records]
    if result.failure is not None:
        texts.append(str(result.failure))
    assert texts, "the failure is neither logged nor raised"
    for text in texts:
        text.encode("utf-8")  # raises on a lone surrogate
        assert "cannot count \x00\\udc85mac" in text
