"""The Tester routes every record as the broker does: each record appended to a topic reaches
every consumer of that topic, whichever edge declared it (Input, Loop, Join, Lookup), and a
group's own table changes only through its callbacks and its recovery."""

from __future__ import annotations

from typing import Any

from goka_ray import (
    Context,
    Input,
    Join,
    Lookup,
    Loop,
    Output,
    Persist,
    Tester,
    codecs,
    define_group,
    table,
)

S, INT = codecs.String(), codecs.Int()


def count(ctx: Context, msg: Any) -> None:
    ctx.set_value((ctx.value() or 0) + 1)


def clicks() -> Any:
    return define_group("clicks", Input("user-clicks", S, count), Persist(INT))


def test_another_groups_table_consumed_as_a_stream_sees_every_changelog_record() -> None:
    seen: list[tuple[str | None, int | None]] = []
    audit = define_group(
        "audit",
        Input(table("clicks"), INT, lambda ctx, n: seen.append((ctx.key, n)), nil="process"),
    )
    t = Tester(clicks(), audit)
    for user in ["ann", "bob", "ann"]:
        t.consume("user-clicks", user, "click")
    assert seen == [("ann", 1), ("bob", 1), ("ann", 2)]
    changelog = [(m.key, m.value) for m in t.messages(table("clicks"))]
    assert changelog == seen


def test_a_changelog_tombstone_reaches_a_stream_consumer_of_the_table() -> None:
    seen: list[tuple[str | None, Any]] = []
    down = define_group(
        "down",
        Input("cmd", S, lambda ctx, m: ctx.delete() if m == "del" else ctx.set_value(1)),
        Persist(INT),
    )
    audit = define_group(
        "audit", Input(table("down"), INT, lambda ctx, n: seen.append((ctx.key, n)), nil="process")
    )
    t = Tester(down, audit)
    t.consume("cmd", "k", "set")
    t.consume("cmd", "k", "del")
    assert seen == [("k", 1), ("k", None)]


def test_emits_to_a_joined_topic_update_the_join_as_its_changelog() -> None:
    maxes = define_group(
        "maxes",
        Input("nums", INT, lambda ctx, n: ctx.emit("max-table", ctx.key, n)),
        Output("max-table", INT),
    )
    seen: list[Any] = []
    reader = define_group(
        "reader",
        Input("asks", S, lambda c, m: seen.append(c.join("max-table"))),
        Join("max-table", INT),
    )
    t = Tester(maxes, reader)
    t.consume("nums", "k", 9)
    t.consume("asks", "k", "?")
    assert seen == [9]
    assert t.table_value("max-table", "k") == 9


def test_consuming_into_a_looked_up_table_feeds_its_readers() -> None:
    seen: list[Any] = []
    g = define_group(
        "g", Input("in", S, lambda ctx, m: seen.append(ctx.lookup("names", m))), Lookup("names", S)
    )
    t = Tester(g)
    t.consume("names", "u1", "Ann")
    t.consume("in", "x", "u1")
    t.consume("names", "u1", None)  # a tombstone
    t.consume("in", "x", "u1")
    assert seen == ["Ann", None]


def test_a_record_written_to_a_groups_changelog_by_others_reaches_it_on_recovery() -> None:
    t = Tester(clicks())
    t.consume("user-clicks", "ann", "click")
    t.consume(table("clicks"), "ann", 41)  # another producer writes the changelog
    assert t.table_value(table("clicks"), "ann") == 1  # the owner's copy: not yet
    t.restart("clicks")
    assert t.table_value(table("clicks"), "ann") == 41
    t.consume("user-clicks", "ann", "click")
    assert t.table_value(table("clicks"), "ann") == 42


def test_a_loop_and_the_dead_letter_topic_reach_other_groups_too() -> None:
    got: list[tuple[str, Any]] = []

    def fussy(ctx: Context, m: str) -> None:
        if m == "bad":
            raise ValueError("no")
        ctx.loopback(ctx.key, m)

    g = define_group("g", Input("in", S, fussy, on_error="dead_letter"), Loop(S, lambda c, m: None))
    spy = define_group(
        "spy",
        Input("g-loop", S, lambda ctx, m: got.append(("loop", m))),
        Input("g-dlq", codecs.Bytes(), lambda ctx, m: got.append(("dlq", m))),
    )
    t = Tester(g, spy)
    t.consume("in", "k", "ok")
    t.consume("in", "k", "bad")
    assert got == [("loop", "ok"), ("dlq", b"bad")]


def test_a_keyless_dead_letter_stays_at_its_partition() -> None:
    g = define_group("g", Input("in", S, count, null_key="dead_letter"), Persist(INT))
    t = Tester(g)
    t.consume("in", None, "v", partition=3)
    [dead] = t.messages("g-dlq")
    assert (dead.key, dead.partition, dead.raw) == (None, 3, b"v")


# -- the same two groups on the broker ---------------------------------------------------------


def test_a_table_consumed_as_a_stream_ends_the_same_in_the_tester_and_on_the_broker(
    kafka, unique, tmp_path
) -> None:
    """Group ``audit`` consumes ``<clicks>-table`` as a stream and keeps the last count of each
    user: in the Tester and with runners on the broker, both tables end equal to the truth
    (on the broker each batch writes only its last value per key, so compare end states)."""
    from kafka_helpers import Running, produce_clicks, read_topic, runners_for, wait_until

    from goka_ray.kafka.topics import TopicManager

    brokers = kafka.bootstrap_servers
    source, group = f"{unique}-clicks", f"{unique}-counter"
    counter = define_group(group, Input(source, S, count), Persist(INT))
    audit = define_group(
        f"{unique}-audit",
        Input(table(group), INT, lambda ctx, n: ctx.set_value(n)),
        Persist(INT),
    )
    with TopicManager(brokers) as topics:
        topics.ensure_stream(source, 2)
        topics.ensure_group_topics(counter)
        topics.ensure_group_topics(audit)
    truth, ends = produce_clicks(brokers, source, 400, users=25)

    t = Tester(counter, audit, partitions=2)
    for _, _, key, value in read_topic(brokers, source, 2):
        assert key is not None
        t.consume_raw(source, key, value)
    assert t.table_items(table(group)) == dict(truth)
    assert t.table_items(audit.table_topic) == dict(truth)

    counters = runners_for(brokers, counter, [0, 1], tmp_path / "c")
    auditors = runners_for(brokers, audit, [0, 1], tmp_path / "a")
    with Running(counters) as running, Running(auditors):
        running.wait_for_offsets(source, ends)

        def audited() -> bool:
            latest = {}
            for _, _, key, value in read_topic(brokers, audit.table_topic, 2):
                assert key is not None and value is not None
                latest[key.decode()] = INT.decode(value)
            return latest == dict(truth)

        wait_until(audited, 60, "the audit table to match the counts")
