"""Goka parity in the core: partitioner, codecs, Inputs, error policies, headers, update
callbacks, deferred commits and visitors, through PartitionCore and the Tester."""

from __future__ import annotations

import tempfile
import threading
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any

import pytest

from goka_ray import (
    Context,
    ContextError,
    GraphError,
    Input,
    Join,
    LevelDBStorage,
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
from goka_ray.core.context import DeferredCommit
from goka_ray.core.graph import Inputs, Visitor
from goka_ray.core.messages import Headers, InputMessage
from goka_ray.core.partition import VISIT_TOPIC
from goka_ray.core.partitioner import GOKA, MURMUR2, GokaPartitioner, fnv1a32, partitioner_named
from goka_ray.core.storage import MemoryStorage, read_all
from goka_ray.core.tables import ChangelogRecord, UpdateContext, UpdateStorage, default_update
from goka_ray.errors import CodecError, ConfigError

INT, S = codecs.Int(), codecs.String()


def ANY(x: Any) -> Any:
    """Pass a deliberately wrong value past the type checker."""
    return x


def msg(
    key: str | None,
    value: bytes | None,
    offset: int,
    topic: str = "nums",
    headers: Headers | None = None,
    partition: int = 0,
) -> InputMessage:
    kb = key.encode() if key is not None else None
    return InputMessage(topic, partition, offset, kb, value, 1_700_000_000_000, headers)


def num(key: str, n: int, offset: int, topic: str = "nums") -> InputMessage:
    return msg(key, INT.encode(n), offset, topic)


# -- 1. Goka's default partitioner (FNV-1a 32) ---------------------------------------------------


def fnv1a32_by_hand(data: bytes) -> int:
    """The FNV-1a spec, step by step: offset basis, then per byte xor, multiply by the prime."""
    h = 2166136261
    for byte in data:
        h ^= byte
        h = (h * 16777619) % 2**32
    return h


def go_partition(data: bytes, n: int) -> int:
    """What sarama's NewCustomHashPartitioner(fnv.New32a) (Goka's producers) computes."""
    h = fnv1a32_by_hand(data)
    signed = h - 2**32 if h >= 2**31 else h  # int32(hasher.Sum32())
    p = abs(signed) % n  # Go's % truncates toward zero...
    p = -p if signed < 0 else p
    return -p if p < 0 else p  # ...and a negative remainder is negated


# published FNV-1a 32 test vectors (draft-eastlake-fnv, Go's hash/fnv tests)
FNV_VECTORS = {b"": 0x811C9DC5, b"a": 0xE40C292C, b"foobar": 0xBF9CF968}


@pytest.mark.parametrize(("data", "expected"), FNV_VECTORS.items())
def test_fnv1a32_matches_the_published_vectors(data: bytes, expected: int) -> None:
    assert fnv1a32(data) == expected == fnv1a32_by_hand(data)


def test_fnv1a32_of_one_byte_worked_out_by_hand() -> None:
    # "a" = 0x61: (0x811c9dc5 ^ 0x61) * 16777619 mod 2**32
    assert (0x811C9DC5 ^ 0x61) == 0x811C9DA4
    assert fnv1a32(b"a") == (0x811C9DA4 * 16777619) % 2**32 == 0xE40C292C


def test_goka_partition_of_a_hash_with_the_top_bit_set() -> None:
    # fnv1a32("foobar") = 0xbf9cf968 -> int32 -1080231576 -> abs 1080231576
    assert fnv1a32(b"foobar") & 0x80000000
    assert 0xBF9CF968 - 2**32 == -1080231576
    assert GOKA.partition(b"foobar", 10) == 1080231576 % 10 == 6
    assert GOKA.partition(b"foobar", 7) == 1080231576 % 7
    # "a": 0xe40c292c, top bit set too
    assert GOKA.partition(b"a", 12) == (2**32 - 0xE40C292C) % 12


def test_goka_partition_of_a_hash_without_the_top_bit() -> None:
    key = next(k for k in (f"k{i}".encode() for i in range(100)) if fnv1a32(k) < 2**31)
    assert GOKA.partition(key, 13) == fnv1a32(key) % 13


def test_goka_partition_of_int32_min_is_where_sarama_puts_it() -> None:
    # this key hashes to 0x80000000 = int32 -2147483648, whose negation overflows in Go.
    # sarama takes the remainder first (-2147483648 % 3 == -2), then negates: partition 2.
    key = b"goka-13897L2"
    assert fnv1a32(key) == 0x80000000
    assert GOKA.partition(key, 3) == 2 == 2**31 % 3
    assert GOKA.partition(key, 8) == 0
    assert all(GOKA.partition(key, n) >= 0 for n in range(1, 50))


def test_goka_partition_equals_go_for_many_keys_and_counts() -> None:
    keys = [f"user-{i}".encode() for i in range(500)] + [b"", b"goka-13897L2", "é".encode()]
    for n in (1, 2, 3, 7, 10, 32, 100):
        assert [GOKA.partition(k, n) for k in keys] == [go_partition(k, n) for k in keys]
    assert len({GOKA.partition(k, 10) for k in keys}) == 10


def test_goka_partitioner_is_not_librdkafkas_and_differs_from_murmur2() -> None:
    assert GOKA.librdkafka_name is None
    assert isinstance(GOKA, GokaPartitioner)
    keys = [f"user-{i}".encode() for i in range(100)]
    assert [GOKA.partition(k, 10) for k in keys] != [MURMUR2.partition(k, 10) for k in keys]


def test_partitioner_named() -> None:
    assert partitioner_named("murmur2") is MURMUR2
    assert partitioner_named("goka") is GOKA
    assert partitioner_named(" GOKA ") is GOKA
    with pytest.raises(ConfigError, match=r"unknown partitioner 'fnv'; use one of \['goka', "):
        partitioner_named("fnv")


# -- 2. GokaInt64 codec ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "data"),
    [
        (0, b"0"),
        (42, b"42"),
        (-7, b"-7"),
        (2**63 - 1, b"9223372036854775807"),
        (-(2**63), b"-9223372036854775808"),
    ],
)
def test_goka_int64_is_decimal_text(value: int, data: bytes) -> None:
    assert codecs.GokaInt64().encode(value) == data
    assert codecs.GokaInt64().decode(data) == value


def test_goka_int64_decodes_what_go_parseint_accepts() -> None:
    c = codecs.GokaInt64()
    assert c.decode(b"+5") == 5
    assert c.decode(b"007") == 7
    assert c.decode(b"-0") == 0
    assert c.decode(ANY(bytearray(b"12"))) == 12


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b" 1",
        b"1 ",
        b"1_000",
        b"0x10",
        b"1.0",
        b"+",
        b"--1",
        "\u0661".encode(),
        b"9223372036854775808",
        b"-9223372036854775809",
        b"\xff",
    ],
)
def test_goka_int64_rejects_what_go_parseint_rejects(data: bytes) -> None:
    with pytest.raises(CodecError, match="GokaInt64 codec cannot decode"):
        codecs.GokaInt64().decode(data)


@pytest.mark.parametrize("value", [True, 1.0, "1", None, 2**63, -(2**63) - 1])
def test_goka_int64_rejects_non_int64_values(value: object) -> None:
    with pytest.raises(CodecError, match="GokaInt64 codec cannot encode"):
        codecs.GokaInt64().encode(value)  # type: ignore[arg-type]


# -- 3. Inputs ---------------------------------------------------------------------------------


def total(ctx: Context, n: int) -> None:
    ctx.set_value((ctx.value() or 0) + n)


def test_inputs_expands_to_one_input_per_topic_with_the_same_options() -> None:
    g = define_group(
        "m",
        Inputs(
            ["a", "b", "c"],
            INT,
            total,
            on_decode_error="skip",
            nil="process",
            on_error="dead_letter",
        ),
        Persist(INT),
    )
    assert [i.topic for i in g.inputs] == ["a", "b", "c"]
    assert all(i.codec is g.inputs[0].codec and i.callback is total for i in g.inputs)
    streams = {s.topic: s for s in g.streams()}
    assert {(s.on_decode_error, s.nil, s.on_error) for s in streams.values()} == {
        ("skip", "process", "dead_letter")
    }
    assert [type(e).__name__ for e in g.edges] == ["Input", "Input", "Input", "Persist"]


def test_inputs_can_sit_in_an_edge_list_and_accepts_any_iterable() -> None:
    g = define_group("m", [Inputs(iter(("a", "b")), INT, total), Persist(INT)])
    assert g.stream_topics() == ["a", "b"]


def test_inputs_streams_reach_one_callback_in_core_and_tester() -> None:
    g = define_group("m", Inputs(("a", "b"), INT, total), Persist(INT))
    result = PartitionCore(g, 0).process([num("k", 1, 0, "a"), num("k", 2, 0, "b")])
    assert result.table_writes == {b"k": INT.encode(3)}
    assert result.positions == {("a", 0): 1, ("b", 0): 1}
    t = Tester(g)
    t.consume("a", "k", 5)
    t.consume("b", "k", 6)
    assert t.table_value(table("m"), "k") == 11


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Inputs("a", INT, total), r"pass a list of topic names; for one topic use Input"),
        (lambda: Inputs([], INT, total), r"name at least one topic"),
        (lambda: Inputs(["a", "a"], INT, total), r"topics \['a'\] are listed twice"),
        (lambda: Inputs(["a", "b c"], INT, total), r"Inputs: 'b c' is not a valid Kafka topic"),
        (lambda: Inputs(["a"], INT, ANY(lambda c: 0)), r"cannot be called as callback\(ctx, msg\)"),
        (lambda: Inputs(["a"], ANY(object()), total), r"is not a codec"),
        (lambda: Inputs(["a"], INT, total, on_error=ANY("drop")), r"on_error='drop'; choose one"),
        (lambda: Inputs(["a"], INT, total, nil=ANY("x")), r"nil='x'; choose one of"),
    ],
)
def test_inputs_is_validated_like_input(make: Any, match: str) -> None:
    with pytest.raises(GraphError, match=match):
        make()


def test_inputs_topics_collide_with_other_edges_like_inputs_do() -> None:
    with pytest.raises(GraphError, match="topic 'a' is used by both"):
        define_group("m", Inputs(["a", "b"], INT, total), Input("a", INT, total))


# -- 4. callback error policy ------------------------------------------------------------------


def add_or_raise(ctx: Context, n: int) -> None:
    """Write and emit, then raise for negatives: those effects must never show."""
    ctx.set_value((ctx.value() or 0) + n)
    ctx.emit("out", ctx.key, n)
    if n < 0:
        raise ValueError(f"negative: {n}")


def policy_core(on_error: Any, callback: Any = add_or_raise) -> PartitionCore:
    g = define_group(
        "pol", Input("nums", INT, callback, on_error=on_error), Persist(INT), Output("out", INT)
    )
    return PartitionCore(g, 0)


def test_on_error_defaults_to_fail() -> None:
    assert Input("a", INT, total).on_error == "fail"
    assert Loop(INT, total).on_error == "fail"
    c = policy_core("fail")
    result = c.process([num("k", 1, 0), num("k", -1, 1), num("k", 5, 2)])
    assert result.failure is not None and isinstance(result.failure.error, ValueError)
    assert (result.failure.offset, result.processed) == (1, 1)
    assert result.positions == {("nums", 0): 1}


def test_on_error_skip_discards_the_effects_advances_and_counts() -> None:
    c = policy_core("skip")
    result = c.process([num("k", 1, 0), num("k", -1, 1), num("k", 5, 2)])
    assert result.failure is None
    assert (result.processed, result.skipped, result.callback_errors) == (2, 1, 1)
    assert result.table_writes == {b"k": INT.encode(6)}  # the -1 write never happened
    assert [INT.decode(m.value or b"") for m in result.emits] == [1, 5]
    assert result.positions == {("nums", 0): 3}
    assert (c.stats.skipped, c.stats.callback_errors, c.stats.processed) == (1, 1, 2)


def test_on_error_dead_letter_forwards_the_raw_message_with_error_headers() -> None:
    c = policy_core("dead_letter")
    bad = msg("k", INT.encode(-3), 7, headers=[("trace", b"t")])
    result = c.process([num("k", 1, 6), bad, num("k", 5, 8)])
    assert result.failure is None
    assert (result.processed, result.dead_lettered, result.callback_errors) == (2, 1, 1)
    assert [(m.topic, m.key) for m in result.emits] == [
        ("out", b"k"),
        ("pol-dlq", b"k"),
        ("out", b"k"),
    ]
    letter = result.emits[1]
    assert letter.value == INT.encode(-3)
    headers = dict(letter.headers or [])
    assert headers["trace"] == b"t"
    assert headers["goka-ray.error"] == b"ValueError: negative: -3"
    assert headers["goka-ray.stage"] == b"callback"
    assert (headers["goka-ray.topic"], headers["goka-ray.offset"]) == (b"nums", b"7")
    assert result.table_writes == {b"k": INT.encode(6)}
    assert (c.stats.dead_lettered, c.stats.emitted) == (1, 2)


def test_decode_dead_letters_say_their_stage_too() -> None:
    g = define_group("d", Input("nums", INT, total, on_decode_error="dead_letter"), Persist(INT))
    result = PartitionCore(g, 0).process([msg("k", b"bad", 0)])
    assert dict(result.emits[0].headers or [])["goka-ray.stage"] == b"undecodable"
    assert result.callback_errors == 0


@pytest.mark.parametrize("policy", ["skip", "dead_letter"])
def test_ctx_fail_and_context_misuse_always_fail(policy: Any) -> None:
    def fails(ctx: Context, n: int) -> None:
        ctx.fail("stop here")

    result = policy_core(policy, fails).process([num("k", 1, 0)])
    assert result.failure is not None and "stop here" in str(result.failure)

    def misuses(ctx: Context, n: int) -> None:
        ctx.emit("undeclared", ctx.key, n)

    result = policy_core(policy, misuses).process([num("k", 1, 0)])
    assert result.failure is not None and isinstance(result.failure.error, ContextError)


def test_uses_dead_letter_includes_on_error() -> None:
    assert define_group("g", Input("a", INT, total, on_error="dead_letter")).uses_dead_letter()
    assert not define_group("g", Input("a", INT, total, on_error="skip")).uses_dead_letter()
    g = define_group("g", Input("a", INT, total), Loop(INT, total, on_error="dead_letter"))
    assert g.uses_dead_letter()


def test_loop_on_error_applies_to_the_loop_topic() -> None:
    def boom(ctx: Context, n: int) -> None:
        raise RuntimeError("boom")

    g = define_group("lp", Input("nums", INT, total), Loop(INT, boom, on_error="skip"))
    result = PartitionCore(g, 0).process([num("k", 1, 0, "lp-loop")])
    assert (result.failure, result.skipped, result.callback_errors) == (None, 1, 1)
    with pytest.raises(GraphError, match="Loop: on_error='x'; choose one of"):
        Loop(INT, boom, on_error="x")  # type: ignore[arg-type]


def test_tester_follows_the_on_error_policy() -> None:
    g = define_group(
        "pol",
        Input("nums", INT, add_or_raise, on_error="dead_letter"),
        Persist(INT),
        Output("out", INT),
    )
    t = Tester(g)
    t.consume("nums", "k", 2)
    t.consume("nums", "k", -1)
    t.consume("nums", "k", 3)
    assert t.table_value(table("pol"), "k") == 5
    [letter] = t.messages("pol-dlq")
    assert (letter.key, letter.raw) == ("k", INT.encode(-1))
    assert letter.headers["goka-ray.error"] == b"ValueError: negative: -1"
    assert [m.value for m in t.messages("out")] == [2, 3]
    skipping = define_group(
        "s", Input("nums", INT, add_or_raise, on_error="skip"), Persist(INT), Output("out", INT)
    )
    t = Tester(skipping)
    t.consume("nums", "k", -1)  # does not raise
    assert t.table_value(table("s"), "k") is None


# -- 5. per-call and default headers -----------------------------------------------------------


def with_headers(ctx: Context, n: int) -> None:
    if n == 0:
        ctx.delete(headers={"op": "delete"})
    else:
        ctx.set_value(n, headers={"op": "set", "n": str(n)})
    ctx.emit("out", ctx.key, n, headers={"kind": b"emit"})
    ctx.loopback(ctx.key, n, headers={"kind": "loop"})


def headers_graph() -> Any:
    return define_group(
        "h",
        Input("nums", INT, with_headers),
        Loop(INT, lambda ctx, n: None),
        Persist(INT),
        Output("out", INT),
    )


def test_set_value_delete_emit_and_loopback_take_headers() -> None:
    result = PartitionCore(headers_graph(), 0).process([num("a", 1, 0), num("b", 0, 1)])
    assert result.table_headers == {
        b"a": [("op", b"set"), ("n", b"1")],
        b"b": [("op", b"delete")],
    }
    assert [(m.key, m.value, m.headers) for m in result.changelog()] == [
        (b"a", INT.encode(1), [("op", b"set"), ("n", b"1")]),
        (b"b", None, [("op", b"delete")]),
    ]
    assert [(m.topic, m.headers) for m in result.emits] == [
        ("out", [("kind", b"emit")]),
        ("h-loop", [("kind", b"loop")]),
        ("out", [("kind", b"emit")]),
        ("h-loop", [("kind", b"loop")]),
    ]


def test_the_last_write_of_a_key_in_a_batch_keeps_its_own_headers() -> None:
    def write(ctx: Context, n: int) -> None:
        if n == 2:
            ctx.set_value(n)  # no headers: the record of n=1's headers must not stick
        else:
            ctx.set_value(n, headers={"n": str(n)})

    g = define_group("h", Input("nums", INT, write), Persist(INT))
    result = PartitionCore(g, 0).process([num("a", 1, 0), num("a", 2, 1)])
    assert result.table_headers == {}
    assert result.changelog()[0].headers is None
    result = PartitionCore(g, 0).process([num("a", 2, 0), num("a", 3, 1)])
    assert result.table_headers == {b"a": [("n", b"3")]}


def test_the_last_write_keeps_its_own_headers_also_when_its_callback_emits() -> None:
    def write(ctx: Context, n: int) -> None:
        if n == 1:
            ctx.set_value(n, headers={"n": "1"})
        else:
            ctx.set_value(n)
            ctx.emit("out", ctx.key, n)

    g = define_group("h", Input("nums", INT, write), Persist(INT), Output("out", INT))
    result = PartitionCore(g, 0).process([num("a", 1, 0), num("a", 2, 1)])
    assert result.table_headers == {}
    assert [(m.key, m.value, m.headers) for m in result.changelog()] == [
        (b"a", INT.encode(2), None)
    ]
    result = PartitionCore(g, 0).process([num("a", 2, 0), num("a", 1, 1)])
    assert result.table_headers == {b"a": [("n", b"1")]}


def test_default_headers_go_under_per_call_headers_on_every_outgoing_message() -> None:
    core = PartitionCore(headers_graph(), 0, default_headers={"app": "billing", "kind": b"default"})
    result = core.process([num("a", 1, 0)])
    assert dict(result.table_headers[b"a"]) == {
        "app": b"billing",
        "kind": b"default",
        "op": b"set",
        "n": b"1",
    }
    assert [dict(m.headers or []) for m in result.emits] == [
        {"app": b"billing", "kind": b"emit"},
        {"app": b"billing", "kind": b"loop"},
    ]

    def plain(ctx: Context, n: int) -> None:
        ctx.set_value(n)
        ctx.emit("out", ctx.key, n)

    g = define_group("p", Input("nums", INT, plain), Persist(INT), Output("out", INT))
    result = PartitionCore(g, 0, default_headers={"app": "x"}).process([num("a", 1, 0)])
    assert result.changelog()[0].headers == [("app", b"x")]
    assert result.emits[0].headers == [("app", b"x")]


def test_dead_letters_carry_the_original_headers_not_the_defaults() -> None:
    g = define_group("d", Input("nums", INT, total, on_decode_error="dead_letter"), Persist(INT))
    result = PartitionCore(g, 0, default_headers={"app": "x"}).process([msg("k", b"bad", 0)])
    assert "app" not in dict(result.emits[0].headers or [])


def test_bad_headers_are_rejected_when_the_callback_passes_them() -> None:
    def bad(ctx: Context, n: int) -> None:
        ctx.set_value(n, headers={"h": 1})  # type: ignore[dict-item]

    g = define_group("b", Input("nums", INT, bad), Persist(INT))
    failure = PartitionCore(g, 0).process([num("a", 1, 0)]).failure
    assert failure is not None and isinstance(failure.error, TypeError)


def test_tester_records_headers_on_changelog_emits_and_loopbacks() -> None:
    seen: list[dict[str, bytes]] = []

    def on_loop(ctx: Context, n: int) -> None:
        seen.append(ctx.headers)

    g = define_group(
        "h", Input("nums", INT, with_headers), Loop(INT, on_loop), Persist(INT), Output("out", INT)
    )
    t = Tester(g, default_headers={"app": "test"})
    t.consume("nums", "a", 1)
    t.consume("nums", "a", 0)
    assert [m.headers for m in t.messages(table("h"))] == [
        {"app": b"test", "op": b"set", "n": b"1"},
        {"app": b"test", "op": b"delete"},
    ]
    assert [m.headers for m in t.messages("out")] == [{"app": b"test", "kind": b"emit"}] * 2
    assert seen == [{"app": b"test", "kind": b"loop"}] * 2


# -- 6. update callbacks -----------------------------------------------------------------------


def keep_max(ctx: UpdateContext, storage: UpdateStorage, key: str, value: bytes | None) -> None:
    """Store only growing values; ignore tombstones."""
    if value is None:
        return
    old = storage.get(key)
    if old is None or INT.decode(value) > INT.decode(old):
        storage.set(key, value)


def test_update_replaces_the_default_store_during_recovery() -> None:
    g = define_group("u", Input("nums", INT, total), Persist(INT, update=keep_max))
    storage = MemoryStorage()
    core = PartitionCore(g, 0, storage)
    records = [(b"a", INT.encode(5)), (b"a", INT.encode(3)), (b"b", INT.encode(1)), (b"b", None)]
    assert core.recover(records, 10) == 4
    assert read_all(storage) == {b"a": INT.encode(5), b"b": INT.encode(1)}
    assert (storage.offset(), storage.key_count(), len(core.table or [])) == (10, 2, 2)


def test_update_gets_the_coordinates_and_headers_of_each_record() -> None:
    seen: list[tuple[UpdateContext, str, bytes | None]] = []

    def spy(ctx: UpdateContext, storage: UpdateStorage, key: str, value: bytes | None) -> None:
        seen.append((ctx, key, value))
        default_update(ctx, storage, key, value)

    g = define_group("u", Input("nums", INT, total), Persist(INT, update=spy))
    core = PartitionCore(g, 3)
    core.recover(
        [ChangelogRecord(b"a", b"x", 7, [("h", b"1")]), (b"b", None), (None, b"no key")], 9
    )
    assert seen == [
        (UpdateContext("u-table", 3, 7, {"h": b"1"}), "a", b"x"),
        (UpdateContext("u-table", 3, -1, {}), "b", None),
    ]
    with pytest.raises(FrozenInstanceError):
        seen[0][0].offset = 1  # type: ignore[misc]


def test_update_can_transform_and_write_other_keys_keeping_the_key_count() -> None:
    def index(ctx: UpdateContext, storage: UpdateStorage, key: str, value: bytes | None) -> None:
        if value is None:
            storage.delete(key)
            return
        storage.set(key, value.upper())
        storage.set(b"by-value:" + value, key.encode())
        assert storage.has(key) and storage.get(key) == value.upper()

    g = define_group("u", Input("nums", S, lambda ctx, m: None), Persist(S, update=index))
    storage = LevelDBStorage(Path(tempfile.mkdtemp()) / "db")
    try:
        core = PartitionCore(g, 0, storage)
        core.recover([(b"a", b"x"), (b"b", b"y"), (b"a", None)], 3)
        assert read_all(storage) == {b"b": b"Y", b"by-value:x": b"a", b"by-value:y": b"b"}
        assert (storage.key_count(), storage.offset()) == (3, 3)
    finally:
        storage.destroy()


def test_a_raising_update_applies_nothing_and_names_the_record() -> None:
    def picky(ctx: UpdateContext, storage: UpdateStorage, key: str, value: bytes | None) -> None:
        if key == "bad":
            raise ValueError("no bad keys")
        default_update(ctx, storage, key, value)

    g = define_group("u", Input("nums", INT, total), Persist(INT, update=picky))
    core = PartitionCore(g, 1)
    with pytest.raises(ProcessingError, match=r"group 'u' failed on u-table\[1\]@4 key='bad'"):
        core.recover([ChangelogRecord(b"ok", b"1", 3), ChangelogRecord(b"bad", b"2", 4)], 5)
    assert core.table is not None and len(core.table) == 0 and core.table.offset is None


def test_update_storage_set_wants_bytes() -> None:
    def wrong(ctx: UpdateContext, storage: UpdateStorage, key: str, value: bytes | None) -> None:
        storage.set(key, 5)  # type: ignore[arg-type]

    g = define_group("u", Input("nums", INT, total), Persist(INT, update=wrong))
    with pytest.raises(ProcessingError, match="needs the encoded value as bytes") as info:
        PartitionCore(g, 0).recover([(b"a", b"1")], 1)
    assert isinstance(info.value.error, TypeError)


def test_join_update_applies_to_the_joined_table() -> None:
    g = define_group(
        "j",
        Input("nums", INT, lambda ctx, n: ctx.emit("out", ctx.key, ctx.join("maxes"))),
        Join("maxes", INT, update=keep_max),
        Output("out", INT),
    )
    core = PartitionCore(g, 0, joins={"maxes": MemoryStorage()})
    core.recover_join("maxes", [(b"k", INT.encode(9)), (b"k", INT.encode(2))], 2)
    result = core.process([num("k", 0, 0)])
    assert result.emits[0].value == INT.encode(9)


def test_own_writes_do_not_go_through_update() -> None:
    g = define_group(
        "u", Input("nums", INT, lambda ctx, n: ctx.set_value(n)), Persist(INT, keep_max)
    )
    core = PartitionCore(g, 0)
    result = core.process([num("k", 5, 0), num("k", 1, 1)])
    assert result.table_writes == {b"k": INT.encode(1)}


@pytest.mark.parametrize(
    ("update", "match"),
    [
        (42, r"Persist: update 42 is not callable; pass a function \(ctx, storage, key, value\)"),
        (lambda ctx, s, k: None, r"cannot be called as update\(ctx, storage, key, value\)"),
        (lambda a, b, c, d, e: None, r"give it four positional parameters"),
    ],
)
def test_update_callbacks_are_validated(update: Any, match: str) -> None:
    with pytest.raises(GraphError, match=match):
        Persist(INT, update=update)


def test_async_update_callbacks_are_rejected() -> None:
    async def update(ctx: Any, storage: Any, key: str, value: bytes | None) -> None:
        pass

    with pytest.raises(GraphError, match=r"Join\('t'\): update .* is async"):
        Join("t", INT, update=update)  # type: ignore[arg-type]


def test_tester_feeds_joins_with_an_update_through_it() -> None:
    maxes = define_group("maxes", Input("vals", INT, lambda ctx, n: ctx.set_value(n)), Persist(INT))
    reader = define_group(
        "reader",
        Input("asks", S, lambda ctx, m: ctx.emit("answers", ctx.key, ctx.join("maxes-table"))),
        Join("maxes-table", INT, update=keep_max),
        Output("answers", INT),
    )
    t = Tester(maxes, reader)
    t.consume("vals", "k", 7)
    t.consume("vals", "k", 3)  # the owner stores 3; the reader's copy keeps 7
    t.consume("asks", "k", "?")
    assert t.table_value("maxes-table", "k") == 3
    assert [m.value for m in t.messages("answers")] == [7]
    t.set_table_value("maxes-table", "k", 11)
    t.set_table_value("maxes-table", "k", 4)
    t.consume("asks", "k", "?")
    assert [m.value for m in t.messages("answers")] == [7, 11]


def test_tester_restart_rebuilds_the_own_table_through_update() -> None:
    def drop_odd(ctx: UpdateContext, storage: UpdateStorage, key: str, value: bytes | None) -> None:
        if value is not None and INT.decode(value) % 2:
            return
        default_update(ctx, storage, key, value)

    g = define_group(
        "r", Input("nums", INT, lambda ctx, n: ctx.set_value(n)), Persist(INT, update=drop_odd)
    )
    t = Tester(g)
    for i, n in enumerate([2, 3, 4, 5]):
        t.consume("nums", f"k{i}", n)
    assert t.table_items(table("r")) == {"k0": 2, "k1": 3, "k2": 4, "k3": 5}
    t.restart()
    assert t.table_items(table("r")) == {"k0": 2, "k2": 4}
    t.consume("nums", "k1", 7)
    assert t.table_value(table("r"), "k1") == 7
    t.restart("r")
    assert t.table_value(table("r"), "k1") is None
    with pytest.raises(ConfigError, match=r"restart\('nope'\): no such group"):
        t.restart("nope")


# -- 7. deferred commits -----------------------------------------------------------------------


class Later:
    """Collects the deferred-commit callables of callbacks, to call them later."""

    def __init__(self) -> None:
        self.done: list[DeferredCommit] = []

    def callback(self, ctx: Context, n: int) -> None:
        ctx.set_value(n)
        self.done.append(ctx.defer_commit())
        if n < 0:
            raise ValueError("negative")


def deferring(later: Later, on_error: Any = "fail") -> Any:
    return define_group("def", Input("nums", INT, later.callback, on_error=on_error), Persist(INT))


def test_deferred_commits_are_listed_in_the_batch_result() -> None:
    later = Later()
    result = PartitionCore(deferring(later), 0).process([num("a", 1, 0), num("b", 2, 1)])
    assert result.deferred == later.done and result.deferred_pending == 2
    assert [(d.topic, d.partition, d.offset, d.key) for d in result.deferred] == [
        ("nums", 0, 0, "a"),
        ("nums", 0, 1, "b"),
    ]
    assert result.table_writes  # the effects are there; only the offset commit waits
    with pytest.raises(TimeoutError, match=r"2 deferred commit\(s\) not done after 0.05s"):
        result.wait_deferred(0.05)
    later.done[0]()
    later.done[1](None)
    assert result.wait_deferred(0) is None and result.deferred_pending == 0


def test_wait_deferred_returns_the_first_error_in_message_order() -> None:
    later = Later()
    result = PartitionCore(deferring(later), 0).process([num("a", 1, 0), num("b", 2, 1)])
    later.done[1](RuntimeError("second"))
    later.done[0]("first failed")  # a string becomes a CallbackFailed
    later.done[0]()  # a second call is a no-op
    error = result.wait_deferred(1)
    assert isinstance(error, ProcessingError)
    assert (error.group, error.topic, error.partition, error.offset, error.key) == (
        "def",
        "nums",
        0,
        0,
        "a",
    )
    assert str(error.error) == "first failed"
    assert result.deferred_error() is not None


def test_deferred_commits_can_be_called_from_other_threads() -> None:
    later = Later()
    result = PartitionCore(deferring(later), 0).process([num(f"k{i}", i, i) for i in range(20)])
    threads = [threading.Timer(0.01 * (i % 5), d) for i, d in enumerate(later.done)]
    for t in threads:
        t.start()
    assert result.wait_deferred(10) is None
    for t in threads:
        t.join()


def test_deferred_commits_of_a_failed_or_skipped_callback_are_dropped() -> None:
    later = Later()
    result = PartitionCore(deferring(later, "skip"), 0).process([num("a", 1, 0), num("b", -1, 1)])
    assert len(later.done) == 2 and result.deferred == later.done[:1]
    later = Later()
    result = PartitionCore(deferring(later), 0).process([num("a", -1, 0)])
    assert result.failure is not None and result.deferred == []


def test_a_batch_without_deferred_commits_waits_for_nothing() -> None:
    result = PartitionCore(deferring(Later()), 0).process([])
    assert result.wait_deferred(0) is None


def test_tester_commits_only_after_the_deferred_callable_is_called() -> None:
    later = Later()
    t = Tester(deferring(later), partitions=1)
    t.consume("nums", "a", 1)
    t.consume("nums", "b", 2)
    assert t.table_value(table("def"), "a") == 1
    assert t.committed_offset("def", "nums", 0) is None
    assert t.deferred_pending() == 2
    later.done[1]()
    assert t.committed_offset("def", "nums", 0) is None  # "a" still holds it back
    later.done[0]()
    assert t.committed_offset("def", "nums", 0) == 2
    assert t.deferred_pending() == 0


def test_tester_raises_a_deferred_error_once() -> None:
    def sync_fail(ctx: Context, n: int) -> None:
        ctx.defer_commit()(ValueError(f"bad {n}"))

    t = Tester(define_group("s", Input("nums", INT, sync_fail)), partitions=1)
    with pytest.raises(ProcessingError, match=r"s' failed on nums\[0\]@0 key='k': ValueError"):
        t.consume("nums", "k", 1)
    assert t.committed_offset("s", "nums", 0) is None

    later = Later()
    t = Tester(deferring(later), partitions=1)
    t.consume("nums", "a", 1)
    later.done[0](KeyError("late"))
    with pytest.raises(ProcessingError, match="KeyError"):
        t.consume("nums", "b", 2)  # surfaces at the next step, like a failed partition
    assert t.deferred_pending() == 0
    assert t.committed_offset("def", "nums", 0) is None


# -- 8. visitors -------------------------------------------------------------------------------


def reset_to(ctx: Context, meta: Any) -> None:
    """A visitor: add meta["add"] to every value, delete values above meta["max"], emit each."""
    assert ctx.topic == VISIT_TOPIC and ctx.offset == -1
    value = ctx.value() + meta["add"]
    if value > meta["max"]:
        ctx.delete(headers={"why": "too big"})
    else:
        ctx.set_value(value)
    ctx.emit("out", ctx.key, value)


def visited_graph() -> Any:
    return define_group(
        "v",
        Input("nums", INT, total),
        Persist(INT),
        Output("out", INT),
        Visitor("reset", reset_to),
    )


def test_visit_runs_the_visitor_for_every_key_with_a_full_context() -> None:
    storage = MemoryStorage()
    core = PartitionCore(visited_graph(), 0, storage)
    core.commit(core.process([num("a", 1, 0), num("b", 2, 1)]), 2)
    core.process([num("c", 10, 2)])  # pending, not committed: visited too
    result = core.visit("reset", {"add": 1, "max": 5})
    assert (result.failure, result.visited, result.positions) == (None, 3, {})
    assert result.table_writes == {b"a": INT.encode(2), b"b": INT.encode(3), b"c": None}
    assert result.table_headers == {b"c": [("why", b"too big")]}
    assert [(m.key, INT.decode(m.value or b"")) for m in result.emits] == [
        (b"a", 2),
        (b"b", 3),
        (b"c", 11),
    ]
    assert core.stats.visited == 3
    core.commit(result, 5)
    assert read_all(storage) == {b"a": INT.encode(2), b"b": INT.encode(3)}


def test_visit_explicit_keys_and_meta_as_the_message() -> None:
    seen: list[tuple[str, Any, Any]] = []
    g = define_group(
        "v",
        Input("nums", INT, total),
        Persist(INT),
        Visitor("spy", lambda ctx, meta: seen.append((ctx.key, ctx.value(), meta))),
    )
    core = PartitionCore(g, 0)
    core.process([num("a", 1, 0)])
    result = core.visit("spy", "meta!", keys=["a", "zz"])
    assert result.visited == 2 and seen == [("a", 1, "meta!"), ("zz", None, "meta!")]
    seen.clear()
    assert core.visit("spy", None, keys=[b"a"]).visited == 1 and seen == [("a", 1, None)]
    with pytest.raises(TypeError, match="a key must be str or bytes, not int"):
        core.visit("spy", None, keys=["a", 5])  # type: ignore[list-item]


def test_a_failing_visitor_stops_the_visit_with_the_key() -> None:
    def picky(ctx: Context, meta: Any) -> None:
        if ctx.key == "b":
            raise ValueError("not b")
        ctx.set_value(0)

    g = define_group("v", Input("nums", INT, total), Persist(INT), Visitor("p", picky))
    core = PartitionCore(g, 0)
    core.process([num("a", 1, 0), num("b", 1, 1), num("c", 1, 2)])
    result = core.visit("p")
    assert result.failure is not None
    assert (result.failure.topic, result.failure.offset, result.failure.key) == (
        "__visit__",
        -1,
        "b",
    )
    assert result.visited == 1 and result.table_writes == {b"a": INT.encode(0)}


def test_visit_of_an_unknown_visitor_says_which_exist() -> None:
    core = PartitionCore(visited_graph(), 0)
    with pytest.raises(ConfigError, match=r"no Visitor\('nope'\).*declared visitors: 'reset'"):
        core.visit("nope")


def test_visitor_edges_are_validated() -> None:
    with pytest.raises(GraphError, match=r"Visitor\('r'\) visits the group table.*add Persist"):
        define_group("v", Input("nums", INT, total), Visitor("r", reset_to))
    with pytest.raises(GraphError, match=r"visitor names \['r'\] are used twice"):
        define_group(
            "v", Input("n", INT, total), Persist(INT), Visitor("r", reset_to), Visitor("r", total)
        )
    with pytest.raises(GraphError, match="non-empty str name"):
        Visitor("", reset_to)
    with pytest.raises(GraphError, match=r"Visitor\('r'\): callback .* cannot be called"):
        Visitor("r", lambda: None)  # type: ignore[arg-type,misc]
    g = visited_graph()
    assert g.visitor("reset") is g.visitors[0] and g.visitor("x") is None
    assert "Visitor('reset')" in repr(g)


def test_tester_visit_all_visits_every_partition_and_runs_what_follows() -> None:
    seen: list[int] = []
    downstream = define_group("d", Input("out", INT, lambda ctx, n: seen.append(n)))
    t = Tester(visited_graph(), downstream, partitions=3)
    for i in range(10):
        t.consume("nums", f"k{i}", i)
    assert t.visit_all("reset", {"add": 1, "max": 5}) == 10
    assert t.table_items(table("v")) == {f"k{i}": i + 1 for i in range(5)}
    assert sorted(seen) == list(range(1, 11))
    assert [m.headers for m in t.messages(table("v")) if m.value is None] == [
        {"why": b"too big"}
    ] * 5
    assert t.visit_all("reset", {"add": 0, "max": 100}, group="v") == 5
    with pytest.raises(ConfigError, match=r"no registered group declares Visitor\('x'\)"):
        t.visit_all("x")
    with pytest.raises(ConfigError, match=r"group 'd' declares no Visitor\('reset'\)"):
        t.visit_all("reset", group="d")


def test_tester_visit_all_raises_a_failing_visitor() -> None:
    def boom(ctx: Context, meta: Any) -> None:
        raise RuntimeError("boom")

    g = define_group("b", Input("nums", INT, total), Persist(INT), Visitor("boom", boom))
    t = Tester(g)
    assert t.visit_all("boom") == 0  # an empty table: nothing to visit
    t.consume("nums", "k", 1)
    with pytest.raises(ProcessingError, match=r"failed on __visit__\[\d\]@-1 key='k'"):
        t.visit_all("boom")


def test_tester_visitor_can_defer_commits() -> None:
    later: list[DeferredCommit] = []
    g = define_group(
        "dv",
        Input("nums", INT, total),
        Persist(INT),
        Visitor("later", lambda ctx, meta: later.append(ctx.defer_commit())),
    )
    t = Tester(g)
    t.consume("nums", "k", 1)
    assert t.visit_all("later") == 1 and t.deferred_pending() == 1
    later[0](ValueError("visit work failed"))
    with pytest.raises(ProcessingError, match="__visit__"):
        t.deferred_pending()
