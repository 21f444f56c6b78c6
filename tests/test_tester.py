"""Tester scenarios and every Context method, including misuse."""

from __future__ import annotations

import pytest

from goka_ray import (
    Context,
    ContextError,
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
    table,
)
from goka_ray.errors import ConfigError
from goka_ray.examples import click_counter

S, INT, JSON = codecs.String(), codecs.Int(), codecs.Json()


@pytest.mark.parametrize("partitions", [1, 4, 8])
def test_click_counts_do_not_depend_on_the_partition_count(partitions):
    t = Tester(click_counter(), partitions=partitions)
    users = [f"u{i % 7}" for i in range(50)]
    for u in users:
        t.consume("user-clicks", u, "click")
    assert t.table_items(table("clicks")) == {u: users.count(u) for u in set(users)}


def test_join_reads_the_same_key_of_a_table_fed_by_set_table_value():
    def greet(ctx: Context, msg: str) -> None:
        ctx.emit("greetings", ctx.key, f"{msg}, {ctx.join('profiles')['name']}")

    g = define_group(
        "greeter", Input("hello", S, greet), Join("profiles", JSON), Output("greetings", S)
    )
    t = Tester(g)
    t.set_table_value("profiles", "u1", {"name": "Ann"})
    t.consume("hello", "u1", "hi")
    assert [m.value for m in t.messages("greetings")] == ["hi, Ann"]
    assert t.table_value("profiles", "u1") == {"name": "Ann"}


def test_lookup_reads_any_key_of_a_table():
    def price(ctx: Context, item: str) -> None:
        ctx.set_value(ctx.lookup("prices", item) or 0)

    g = define_group("orders", Input("buy", S, price), Lookup("prices", INT), Persist(INT))
    t = Tester(g)
    t.set_table_value("prices", "apple", 3)
    t.consume("buy", "ann", "apple")
    t.consume("buy", "bob", "pear")
    assert t.table_items(table("orders")) == {"ann": 3, "bob": 0}


def test_loopback_reaches_the_loop_callback_under_the_new_key():
    def on_follow(ctx: Context, target: str) -> None:
        ctx.loopback(target, ctx.key, headers={"via": "loop"})

    def on_loop(ctx: Context, follower: str) -> None:
        assert ctx.topic == "social-loop" and ctx.headers == {"via": b"loop"}
        ctx.set_value((ctx.value() or []) + [follower])

    g = define_group("social", Input("follows", S, on_follow), Loop(S, on_loop), Persist(JSON))
    t = Tester(g)
    t.consume("follows", "ann", "bob")
    t.consume("follows", "cid", "bob")
    assert t.table_value(table("social"), "bob") == ["ann", "cid"]
    assert [m.key for m in t.messages("social-loop")] == ["bob", "bob"]


def test_a_group_consumes_what_another_emits_and_joins_its_table():
    def count(ctx: Context, msg: str) -> None:
        ctx.set_value((ctx.value() or 0) + 1)
        ctx.emit("counted", ctx.key, ctx.value())

    def alert(ctx: Context, n: int) -> None:
        assert ctx.join(table("counter")) == n
        if n >= 2:
            ctx.set_value("busy")

    counter = define_group(
        "counter", Input("clicks", S, count), Persist(INT), Output("counted", INT)
    )
    alerts = define_group(
        "alerts", Input("counted", INT, alert), Join(table("counter"), INT), Persist(S)
    )
    t = Tester(counter, alerts)
    for _ in range(2):
        t.consume("clicks", "ann", "c")
    t.consume("clicks", "bob", "c")
    assert t.table_items(table("alerts")) == {"ann": "busy"}


def test_delete_removes_the_key_and_writes_a_tombstone():
    def toggle(ctx: Context, msg: str) -> None:
        if msg == "off":
            ctx.delete()
        else:
            ctx.set_value(msg)

    g = define_group("t", Input("in", S, toggle), Persist(S))
    t = Tester(g)
    t.consume("in", "k", "on")
    t.consume("in", "k", "off")
    assert t.table_value(table("t"), "k") is None
    assert [m.value for m in t.messages(table("t"))] == ["on", None]


def test_fail_and_raising_callbacks_raise_out_of_consume_and_the_tester_goes_on():
    def strict(ctx: Context, msg: str) -> None:
        if msg == "fail":
            ctx.fail("told to fail")
        if msg == "raise":
            raise KeyError("boom")
        ctx.set_value(msg)

    g = define_group("s", Input("in", S, strict), Persist(S))
    t = Tester(g)
    with pytest.raises(ProcessingError) as info:
        t.consume("in", "k1", "fail")
    assert (info.value.group, info.value.topic, info.value.key) == ("s", "in", "k1")
    assert "told to fail" in str(info.value.error)
    with pytest.raises(ProcessingError) as info:
        t.consume("in", "k2", "raise")
    assert isinstance(info.value.error, KeyError)
    t.consume("in", "k3", "fine")
    assert t.table_items(table("s")) == {"k3": "fine"}


def test_fail_with_an_exception_keeps_it_as_the_error():
    g = define_group("f", Input("in", S, lambda ctx, m: ctx.fail(ValueError("bad input"))))
    with pytest.raises(ProcessingError) as info:
        Tester(g).consume("in", "k", "x")
    assert isinstance(info.value.error, ValueError)


def test_context_exposes_message_metadata_and_headers():
    seen: list[tuple[object, ...]] = []

    def look(ctx: Context, msg: str) -> None:
        seen.append((ctx.key, ctx.topic, ctx.partition, ctx.offset, ctx.group, ctx.headers))

    t = Tester(define_group("m", Input("in", S, look)), partitions=1)
    t.consume("in", "k", "v", headers={"trace": "abc"})
    t.consume("in", "k", "v")
    assert seen == [("k", "in", 0, 0, "m", {"trace": b"abc"}), ("k", "in", 0, 1, "m", {})]


def test_a_callback_reads_its_own_write():
    def twice(ctx: Context, msg: str) -> None:
        ctx.set_value(1)
        assert ctx.value() == 1
        ctx.delete()
        assert ctx.value() is None

    t = Tester(define_group("w", Input("in", S, twice), Persist(INT)))
    t.consume("in", "k", "v")
    assert t.table_value(table("w"), "k") is None


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (lambda ctx: ctx.emit("nowhere", "k", "v"), r"declares no Output\('nowhere'\)"),
        (lambda ctx: ctx.loopback("k", "v"), "has no Loop edge"),
        (lambda ctx: ctx.join("users"), r"declares no Join\('users'\)"),
        (lambda ctx: ctx.lookup("users", "k"), r"declares no Lookup\('users'\)"),
        (lambda ctx: ctx.value(), r"has no table; add Persist"),
        (lambda ctx: ctx.set_value("v"), r"has no table; add Persist"),
        (lambda ctx: ctx.delete(), r"has no table; add Persist"),
        (lambda ctx: ctx.emit("out", 5, "v"), "key must be str"),
    ],
)
def test_using_an_undeclared_edge_names_it(action, message):
    g = define_group("x", Input("in", S, lambda ctx, m: action(ctx)), Output("out", S))
    with pytest.raises(ProcessingError) as info:
        Tester(g).consume("in", "k", "v")
    assert isinstance(info.value.error, ContextError)
    assert info.value.error.args and __import__("re").search(message, str(info.value.error))


def test_set_value_none_is_refused():
    g = define_group("x", Input("in", S, lambda ctx, m: ctx.set_value(None)), Persist(S))
    with pytest.raises(ProcessingError, match=r"use ctx\.delete"):
        Tester(g).consume("in", "k", "v")


def test_emitted_messages_carry_keys_values_and_headers():
    g = define_group(
        "e",
        Input("in", S, lambda ctx, m: ctx.emit("out", "o", m.upper(), headers={"h": "1"})),
        Output("out", S),
    )
    t = Tester(g)
    t.consume("in", "k", "abc")
    [m] = t.messages("out")
    assert (m.key, m.value, m.headers, m.raw) == ("o", "ABC", {"h": b"1"}, b"ABC")


def test_clear_forgets_tables_and_messages():
    t = Tester(click_counter())
    t.consume("user-clicks", "ann", "c")
    t.clear()
    assert t.table_items(table("clicks")) == {} and t.messages("user-clicks") == []


def test_consuming_a_topic_nobody_reads_is_an_error():
    with pytest.raises(ConfigError, match="no registered group consumes 'typo'"):
        Tester(click_counter()).consume("typo", "k", "v")


def test_decode_policies_in_the_tester():
    g = define_group(
        "d",
        Input("in", INT, lambda ctx, n: ctx.set_value(n), on_decode_error="dead_letter"),
        Persist(INT),
    )
    t = Tester(g)
    t.consume_raw("in", "k", b"bad")
    assert [m.raw for m in t.messages("d-dlq")] == [b"bad"]
