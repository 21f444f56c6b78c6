"""Tester scenarios: whole processor groups run in memory, message by message."""

from __future__ import annotations

from typing import Any

import pytest

from goka_ray import (
    CodecError,
    ConfigError,
    Context,
    GroupGraph,
    Input,
    Join,
    Lookup,
    Loop,
    Output,
    Persist,
    ProcessingError,
    Tester,
    codecs,
    define_group,
    loop_stream,
    table,
)
from goka_ray.core.partitioner import MURMUR2

S, INT, JSON = codecs.String(), codecs.Int(), codecs.Json()


def count(ctx: Context, msg: str) -> None:
    ctx.set_value((ctx.value() or 0) + 1)
    ctx.emit("counts", ctx.key, ctx.value())


def counter(group: str = "clicks") -> GroupGraph:
    return define_group(group, Input("user-clicks", S, count), Persist(INT), Output("counts", INT))


# -- click counting ------------------------------------------------------------------------


def test_click_counting_counts_per_key_across_partitions() -> None:
    t = Tester(counter(), partitions=4)
    users = [f"user{i % 9}" for i in range(60)]
    for u in users:
        t.consume("user-clicks", u, "click")
    assert t.table_items(table("clicks")) == {u: users.count(u) for u in set(users)}
    assert len({m.partition for m in t.messages(table("clicks"))}) > 1  # really partitioned


def test_click_counting_emits_running_totals_in_order() -> None:
    t = Tester(counter())
    for u in ["ann", "bob", "ann", "ann"]:
        t.consume("user-clicks", u, "click")
    assert [(m.key, m.value) for m in t.messages("counts")] == [
        ("ann", 1),
        ("bob", 1),
        ("ann", 2),
        ("ann", 3),
    ]


def test_table_value_reads_one_key_and_none_for_absent_keys() -> None:
    t = Tester(counter())
    t.consume("user-clicks", "ann", "click")
    assert t.table_value(table("clicks"), "ann") == 1
    assert t.table_value(table("clicks"), "nobody") is None


def test_table_items_are_sorted_by_key() -> None:
    t = Tester(counter(), partitions=8)
    for u in ["d", "a", "c", "b"]:
        t.consume("user-clicks", u, "click")
    assert list(t.table_items(table("clicks"))) == ["a", "b", "c", "d"]


def pipeline() -> list[GroupGraph]:
    """Three groups: count clicks, loop a bonus per tenth click, join and look up tables."""

    def on_click(ctx: Context, msg: str) -> None:
        n = (ctx.value() or 0) + 1
        ctx.set_value(n)
        ctx.emit("counted", ctx.key, n)
        if n % 3 == 0:
            ctx.loopback(f"bonus-{ctx.key}", n)

    def on_bonus(ctx: Context, n: int) -> None:
        ctx.set_value((ctx.value() or 0) + n)

    def on_counted(ctx: Context, n: int) -> None:
        assert ctx.join(table("counter")) == n
        level = ctx.lookup("levels", str(n)) or "none"
        ctx.set_value({"n": n, "level": level})

    return [
        define_group(
            "counter",
            Input("clicks", S, on_click),
            Loop(INT, on_bonus),
            Persist(INT),
            Output("counted", INT),
        ),
        define_group(
            "ranker",
            Input("counted", INT, on_counted),
            Join(table("counter"), INT),
            Lookup("levels", S),
            Persist(JSON),
        ),
    ]


@pytest.mark.parametrize("partitions", [1, 2, 3, 8])
def test_tables_do_not_depend_on_the_partition_count(partitions: int) -> None:
    def run(n: int) -> dict[str, Any]:
        t = Tester(*pipeline(), partitions=n)
        for level in range(1, 8):
            t.set_table_value("levels", str(level), f"L{level}")
        for i in range(40):
            t.consume("clicks", f"u{i % 6}", "c")
        return {name: t.table_items(table(name)) for name in ("counter", "ranker")}

    single = run(1)
    assert run(partitions) == single
    assert single["counter"]["bonus-u0"] == 3 + 6  # loopbacks arrived under their new key
    assert single["ranker"]["u0"] == {"n": 7, "level": "L7"}


# -- joins and lookups ---------------------------------------------------------------------


def greeter() -> GroupGraph:
    def greet(ctx: Context, msg: str) -> None:
        profile = ctx.join("profiles")
        name = profile["name"] if profile else "stranger"
        ctx.emit("greetings", ctx.key, f"{msg}, {name}")

    return define_group(
        "greeter", Input("hello", S, greet), Join("profiles", JSON), Output("greetings", S)
    )


def test_join_reads_the_same_key_of_a_table_fed_by_set_table_value() -> None:
    t = Tester(greeter(), partitions=4)
    t.set_table_value("profiles", "u1", {"name": "Ann"})
    t.set_table_value("profiles", "u2", {"name": "Bob"})
    t.consume("hello", "u1", "hi")
    t.consume("hello", "u2", "hey")
    t.consume("hello", "u3", "yo")
    assert [(m.key, m.value) for m in t.messages("greetings")] == [
        ("u1", "hi, Ann"),
        ("u2", "hey, Bob"),
        ("u3", "yo, stranger"),
    ]


def test_set_table_value_none_deletes_the_key() -> None:
    t = Tester(greeter())
    t.set_table_value("profiles", "u1", {"name": "Ann"})
    t.set_table_value("profiles", "u1", None)
    t.consume("hello", "u1", "hi")
    assert t.table_value("profiles", "u1") is None
    assert t.messages("greetings")[0].value == "hi, stranger"


def test_set_table_value_encodes_with_the_table_codec() -> None:
    t = Tester(greeter())
    with pytest.raises(CodecError, match="Json codec cannot encode"):
        t.set_table_value("profiles", "u1", {1, 2})


def test_set_table_value_seeds_the_groups_own_table() -> None:
    t = Tester(counter())
    t.set_table_value(table("clicks"), "ann", 41)
    t.consume("user-clicks", "ann", "click")
    assert t.table_value(table("clicks"), "ann") == 42


def test_lookup_reads_any_key_of_a_table_on_any_partition() -> None:
    def price(ctx: Context, item: str) -> None:
        ctx.set_value((ctx.value() or 0) + (ctx.lookup("prices", item) or 0))

    g = define_group("orders", Input("buy", S, price), Lookup("prices", INT), Persist(INT))
    t = Tester(g, partitions=8)
    items = {"apple": 3, "pear": 5, "fig": 7, "kiwi": 11}
    for item, p in items.items():
        t.set_table_value("prices", item, p)
    assert len({MURMUR2.partition(i.encode(), 8) for i in items}) > 1
    for item in items:
        t.consume("buy", "ann", item)
    t.consume("buy", "ann", "unknown")
    assert t.table_items(table("orders")) == {"ann": sum(items.values())}


def test_lookup_reads_a_table_another_group_writes() -> None:
    def remember(ctx: Context, msg: str) -> None:
        ctx.set_value(msg)

    def check(ctx: Context, key: str) -> None:
        ctx.emit("found", ctx.key, ctx.lookup(table("names"), key) or "?")

    names = define_group("names", Input("set-name", S, remember), Persist(S))
    checker = define_group(
        "checker", Input("ask", S, check), Lookup(table("names"), S), Output("found", S)
    )
    t = Tester(names, checker, partitions=4)
    t.consume("set-name", "u1", "Ann")
    t.consume("ask", "q", "u1")
    t.consume("ask", "q", "u2")
    assert [m.value for m in t.messages("found")] == ["Ann", "?"]


# -- loopback ------------------------------------------------------------------------------


def social() -> GroupGraph:
    def on_follow(ctx: Context, target: str) -> None:
        ctx.loopback(target, ctx.key, headers={"via": "loop"})

    def on_loop(ctx: Context, follower: str) -> None:
        assert ctx.topic == loop_stream("social") and ctx.headers == {"via": b"loop"}
        ctx.set_value((ctx.value() or []) + [follower])

    return define_group("social", Input("follows", S, on_follow), Loop(S, on_loop), Persist(JSON))


def test_loopback_reaches_the_loop_callback_under_the_new_key() -> None:
    t = Tester(social(), partitions=4)
    t.consume("follows", "ann", "bob")
    t.consume("follows", "cid", "bob")
    t.consume("follows", "bob", "ann")
    assert t.table_items(table("social")) == {"bob": ["ann", "cid"], "ann": ["bob"]}


def test_loop_messages_are_recorded_in_the_loop_topic() -> None:
    t = Tester(social(), partitions=4)
    t.consume("follows", "ann", "bob")
    [m] = t.messages("social-loop")
    assert (m.key, m.value, m.headers, m.raw) == ("bob", "ann", {"via": b"loop"}, b"ann")
    assert m.partition == MURMUR2.partition(b"bob", 4)


def test_consume_runs_a_chain_of_loopbacks_until_quiescent() -> None:
    def countdown(ctx: Context, n: int) -> None:
        ctx.set_value(n)
        if n > 0:
            ctx.loopback(f"step{n - 1}", n - 1)

    g = define_group(
        "down",
        Input("start", INT, countdown),
        Loop(INT, countdown),
        Persist(INT),
    )
    t = Tester(g)
    t.consume("start", "step5", 5)
    assert t.table_items(table("down")) == {f"step{i}": i for i in range(6)}


def test_loopback_of_none_reaches_the_loop_callback_as_none() -> None:
    seen: list[Any] = []
    g = define_group(
        "n",
        Input("in", S, lambda ctx, m: ctx.loopback(m, None)),
        Loop(S, lambda ctx, m: seen.append((ctx.key, m))),
    )
    Tester(g).consume("in", "k", "target")
    assert seen == [("target", None)]


# -- several groups ------------------------------------------------------------------------


def test_a_group_consumes_what_another_emits_and_joins_its_table() -> None:
    def alert(ctx: Context, n: int) -> None:
        assert ctx.join(table("clicks")) == n  # the counter's table is already written
        if n >= 2:
            ctx.set_value("busy")

    alerts = define_group(
        "alerts", Input("counts", INT, alert), Join(table("clicks"), INT), Persist(S)
    )
    t = Tester(counter(), alerts, partitions=4)
    for u in ["ann", "ann", "bob"]:
        t.consume("user-clicks", u, "c")
    assert t.table_items(table("alerts")) == {"ann": "busy"}


def test_two_groups_consuming_one_topic_each_get_every_message() -> None:
    t = Tester(counter("a"), counter("b"))
    for u in ["x", "y", "x"]:
        t.consume("user-clicks", u, "c")
    assert t.table_items(table("a")) == t.table_items(table("b")) == {"x": 2, "y": 1}


def test_each_consumer_gets_the_value_encoded_with_its_own_codec() -> None:
    seen: list[tuple[str, Any]] = []
    as_json = define_group("j", Input("t", JSON, lambda ctx, m: seen.append(("j", m))))
    as_pickle = define_group("p", Input("t", codecs.Pickle(), lambda ctx, m: seen.append(("p", m))))
    Tester(as_json, as_pickle).consume("t", "k", [1, "a"])
    assert seen == [("j", [1, "a"]), ("p", [1, "a"])]


def test_an_emitted_stream_no_group_consumes_is_only_recorded() -> None:
    t = Tester(counter())
    t.consume("user-clicks", "ann", "c")
    assert [m.value for m in t.messages("counts")] == [1]


# -- delete --------------------------------------------------------------------------------


def toggler() -> GroupGraph:
    def toggle(ctx: Context, msg: str) -> None:
        if msg == "off":
            ctx.delete()
        else:
            ctx.set_value(msg)

    return define_group("tog", Input("in", S, toggle), Persist(S))


def test_delete_removes_the_key_from_the_table() -> None:
    t = Tester(toggler())
    t.consume("in", "k", "on")
    t.consume("in", "other", "on")
    t.consume("in", "k", "off")
    assert t.table_value(table("tog"), "k") is None
    assert t.table_items(table("tog")) == {"other": "on"}


def test_delete_writes_a_tombstone_to_the_changelog() -> None:
    t = Tester(toggler())
    t.consume("in", "k", "on")
    t.consume("in", "k", "off")
    assert [(m.key, m.value, m.raw) for m in t.messages(table("tog"))] == [
        ("k", "on", b"on"),
        ("k", None, None),
    ]


# -- failures ------------------------------------------------------------------------------


def strict() -> GroupGraph:
    def handle(ctx: Context, msg: str) -> None:
        if msg == "fail":
            ctx.fail("told to fail")
        if msg == "raise":
            raise KeyError("boom")
        ctx.set_value(msg)

    return define_group("s", Input("in", S, handle), Persist(S))


def test_fail_raises_out_of_consume_with_group_topic_key_and_error() -> None:
    t = Tester(strict())
    with pytest.raises(ProcessingError) as info:
        t.consume("in", "k1", "fail")
    assert (info.value.group, info.value.topic, info.value.key) == ("s", "in", "k1")
    assert str(info.value.error) == "told to fail"


def test_a_raising_callback_raises_out_of_consume_with_the_original_exception() -> None:
    t = Tester(strict())
    with pytest.raises(ProcessingError, match="KeyError: 'boom'") as info:
        t.consume("in", "k2", "raise")
    assert isinstance(info.value.error, KeyError) and info.value.__cause__ is info.value.error


def test_the_tester_keeps_working_after_a_failure() -> None:
    t = Tester(strict())
    t.consume("in", "k", "first")
    for bad in ("fail", "raise"):
        with pytest.raises(ProcessingError):
            t.consume("in", "k", bad)
    t.consume("in", "k3", "fine")
    assert t.table_items(table("s")) == {"k": "first", "k3": "fine"}


def test_a_failure_downstream_keeps_upstream_effects_and_drops_the_rest_of_the_cascade() -> None:
    def picky(ctx: Context, n: int) -> None:
        if ctx.key == "bad":
            raise ValueError("no bad keys")
        ctx.set_value(n)

    downstream = define_group("down", Input("counts", INT, picky), Persist(INT))
    t = Tester(counter(), downstream)
    with pytest.raises(ProcessingError) as info:
        t.consume("user-clicks", "bad", "c")
    assert (info.value.group, info.value.topic) == ("down", "counts")
    assert t.table_value(table("clicks"), "bad") == 1  # the counter had already committed
    t.consume("user-clicks", "good", "c")  # nothing left over from the failed cascade
    assert t.table_items(table("down")) == {"good": 1}


def test_a_value_the_input_codec_cannot_encode_delivers_nothing() -> None:
    seen: list[Any] = []
    as_int = define_group("i", Input("t", INT, lambda ctx, m: seen.append(("i", m))))
    as_str = define_group("s", Input("t", S, lambda ctx, m: seen.append(("s", m))))
    t = Tester(as_int, as_str)
    with pytest.raises(CodecError, match="String codec cannot encode int"):
        t.consume("t", "k", 5)  # Int could encode it, String cannot
    assert seen == [] and t.messages("t") == []
    t.consume_raw("t", "k", b"x" * 8)
    assert seen == [("i", int.from_bytes(b"x" * 8, "big")), ("s", "x" * 8)]


# -- nil values and raw input --------------------------------------------------------------


def test_consuming_none_is_a_tombstone_that_inputs_ignore_by_default() -> None:
    t = Tester(counter())
    t.consume("user-clicks", "ann", None)
    assert t.table_items(table("clicks")) == {}
    assert [(m.key, m.value, m.raw) for m in t.messages("user-clicks")] == [("ann", None, None)]


def test_consuming_none_reaches_a_callback_with_nil_process() -> None:
    seen: list[Any] = []
    g = define_group("n", Input("in", S, lambda ctx, m: seen.append(m), nil="process"))
    Tester(g).consume("in", "k", None)
    assert seen == [None]


def dead_lettering() -> GroupGraph:
    return define_group(
        "d",
        Input("in", INT, lambda ctx, n: ctx.set_value(n), on_decode_error="dead_letter"),
        Persist(INT),
    )


def test_consume_raw_delivers_bytes_that_dead_letter_when_undecodable() -> None:
    t = Tester(dead_lettering())
    t.consume_raw("in", "k", b"bad", headers={"trace": "t1"})
    t.consume_raw("in", "k", INT.encode(7))
    [letter] = t.messages("d-dlq")
    assert (letter.key, letter.value, letter.raw) == ("k", b"bad", b"bad")
    assert letter.headers["trace"] == b"t1"
    assert letter.headers["goka-ray.topic"] == b"in"
    assert letter.headers["goka-ray.error"].startswith(b"Int codec cannot decode")
    assert t.table_value(table("d"), "k") == 7


def test_consume_raw_of_undecodable_bytes_fails_under_the_default_policy() -> None:
    g = define_group("f", Input("in", INT, lambda ctx, n: None))
    with pytest.raises(ProcessingError, match="Int codec cannot decode 3 bytes b'bad'") as info:
        Tester(g).consume_raw("in", "k", b"bad")
    assert isinstance(info.value.error, CodecError)


# -- messages() ----------------------------------------------------------------------------


def test_messages_record_inputs_with_key_value_raw_headers_partition_and_offset() -> None:
    t = Tester(counter(), partitions=4)
    t.consume("user-clicks", "ann", "click", headers={"h": "1"})
    t.consume("user-clicks", "ann", "again")
    first, second = t.messages("user-clicks")
    assert (first.topic, first.key, first.value, first.raw, first.headers) == (
        "user-clicks",
        "ann",
        "click",
        b"click",
        {"h": b"1"},
    )
    assert (first.partition, first.offset, second.offset) == (MURMUR2.partition(b"ann", 4), 0, 1)
    assert second.headers == {}


def test_messages_record_emits_with_decoded_values_and_headers() -> None:
    g = define_group(
        "e",
        Input("in", S, lambda ctx, m: ctx.emit("out", "o", {"up": m.upper()}, headers={"h": "1"})),
        Output("out", JSON),
    )
    t = Tester(g)
    t.consume("in", "k", "abc")
    [m] = t.messages("out")
    assert (m.topic, m.key, m.value, m.headers, m.raw) == (
        "out",
        "o",
        {"up": "ABC"},
        {"h": b"1"},
        b'{"up":"ABC"}',
    )


def test_messages_record_the_changelog_of_the_group_table() -> None:
    t = Tester(counter(), partitions=1)
    for u in ["ann", "bob", "ann"]:
        t.consume("user-clicks", u, "c")
    assert [(m.key, m.value, m.raw, m.offset) for m in t.messages("clicks-table")] == [
        ("ann", 1, INT.encode(1), 0),
        ("bob", 1, INT.encode(1), 1),
        ("ann", 2, INT.encode(2), 2),
    ]


def test_messages_of_an_unused_topic_are_empty() -> None:
    assert Tester(counter()).messages("nothing-here") == []


def test_messages_returns_a_copy() -> None:
    t = Tester(counter())
    t.consume("user-clicks", "ann", "c")
    t.messages("counts").clear()
    assert len(t.messages("counts")) == 1


# -- clear ---------------------------------------------------------------------------------


def test_clear_forgets_tables_messages_and_offsets() -> None:
    t = Tester(*pipeline(), partitions=2)
    t.set_table_value("levels", "1", "L1")
    t.consume("clicks", "ann", "c")
    t.clear()
    assert t.table_items(table("counter")) == {} and t.table_items("levels") == {}
    assert t.messages("clicks") == [] and t.messages("counted") == []
    t.consume("clicks", "ann", "c")
    assert t.messages("clicks")[0].offset == 0
    assert t.table_items(table("ranker")) == {"ann": {"n": 1, "level": "none"}}


# -- misuse of the tester ------------------------------------------------------------------


def test_consuming_a_topic_no_group_consumes_is_a_clear_error() -> None:
    with pytest.raises(
        ConfigError,
        match=r"no registered group consumes or reads 'typo'; consumed topics: \['user-clicks'\], "
        r"tables: \['clicks-table'\]",
    ):
        Tester(counter()).consume("typo", "k", "v")


def test_consuming_an_output_nobody_consumes_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no registered group consumes or reads 'counts'"):
        Tester(counter()).consume("counts", "k", 1)


def test_an_unknown_table_is_a_clear_error_listing_the_known_ones() -> None:
    t = Tester(greeter())
    for call in (
        lambda: t.table_value("nope", "k"),
        lambda: t.set_table_value("nope", "k", 1),
        lambda: t.table_items("nope"),
    ):
        with pytest.raises(
            ConfigError,
            match=r"no registered group persists, joins or looks up 'nope'; known tables: \['profiles'\]",
        ):
            call()


def test_a_tester_needs_a_graph() -> None:
    with pytest.raises(ConfigError, match="needs at least one group graph"):
        Tester()


def test_a_tester_needs_at_least_one_partition() -> None:
    with pytest.raises(ConfigError, match="partitions=0"):
        Tester(counter(), partitions=0)


def test_a_group_cannot_be_registered_twice() -> None:
    with pytest.raises(ConfigError, match="a group is registered twice"):
        Tester(counter(), counter())
