"""Group graphs: derived names, what the runtime reads from them, and every validation error."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from goka_ray import (
    Context,
    GraphError,
    GroupGraph,
    Input,
    Join,
    Lookup,
    Loop,
    Output,
    Persist,
    codecs,
    define_group,
    loop_stream,
    table,
)
from goka_ray.core.graph import dead_letter_topic
from goka_ray.errors import CodecError, GokaRayError

S = codecs.String()


def cb(ctx: Context, msg: Any) -> None:
    pass


def other_cb(ctx: Context, msg: Any) -> None:
    pass


# -- names ---------------------------------------------------------------------------------


def test_table_name_is_group_dash_table() -> None:
    assert table("clicks") == "clicks-table"


def test_loop_stream_name_is_group_dash_loop() -> None:
    assert loop_stream("clicks") == "clicks-loop"


def test_dead_letter_topic_name_is_group_dash_dlq() -> None:
    assert dead_letter_topic("clicks") == "clicks-dlq"


def test_graph_derives_its_topic_names_from_the_group() -> None:
    g = define_group("clicks", Input("in", S, cb), Persist(S))
    assert (g.group, g.table_topic, g.loop_topic, g.dead_letter_topic) == (
        "clicks",
        "clicks-table",
        "clicks-loop",
        "clicks-dlq",
    )


# -- structure -----------------------------------------------------------------------------


def full_graph() -> GroupGraph:
    return define_group(
        "g",
        Input("a", S, cb),
        Output("out", S),
        Input("b", codecs.Int(), other_cb, on_decode_error="skip", nil="process"),
        Loop(codecs.Json(), cb, on_decode_error="dead_letter"),
        Persist(codecs.Int()),
        Join("users", S),
        Lookup("prices", codecs.Float()),
        Join("accounts", S),
    )


def test_graph_sorts_edges_by_kind_in_declaration_order() -> None:
    g = full_graph()
    assert [i.topic for i in g.inputs] == ["a", "b"]
    assert [j.table for j in g.joins] == ["users", "accounts"]
    assert [lk.table for lk in g.lookups] == ["prices"]
    assert [o.topic for o in g.outputs] == ["out"]
    assert isinstance(g.persist, Persist) and isinstance(g.loop, Loop)


def test_graph_without_persist_or_loop_has_none_for_them() -> None:
    g = define_group("g", Input("a", S, cb))
    assert (g.persist, g.loop, g.joins, g.lookups, g.outputs) == (None, None, (), (), ())


def test_copartitioned_topics_are_inputs_loop_table_and_joins_but_not_lookups() -> None:
    assert full_graph().copartitioned_topics() == [
        "a",
        "b",
        "g-loop",
        "g-table",
        "users",
        "accounts",
    ]


def test_copartitioned_topics_leave_out_table_and_loop_when_not_declared() -> None:
    g = define_group("g", Input("a", S, cb), Lookup("prices", S), Output("out", S))
    assert g.copartitioned_topics() == ["a"]


def test_stream_topics_are_inputs_then_the_loop_topic() -> None:
    assert full_graph().stream_topics() == ["a", "b", "g-loop"]


def test_streams_carry_codec_callback_and_policies_of_each_input() -> None:
    streams = {s.topic: s for s in full_graph().streams()}
    assert isinstance(streams["b"].codec, codecs.Int)
    assert streams["b"].callback is other_cb
    assert (streams["b"].on_decode_error, streams["b"].nil) == ("skip", "process")
    assert (streams["a"].on_decode_error, streams["a"].nil) == ("fail", "ignore")


def test_loop_stream_uses_the_loop_codec_callback_and_decode_policy() -> None:
    loop = {s.topic: s for s in full_graph().streams()}["g-loop"]
    assert isinstance(loop.codec, codecs.Json)
    assert loop.callback is cb
    assert (loop.on_decode_error, loop.nil) == ("dead_letter", "process")


def test_output_codec_finds_declared_outputs_only() -> None:
    g = full_graph()
    assert g.output_codec("out") is g.outputs[0].codec
    assert g.output_codec("a") is None


def test_uses_dead_letter_when_any_stream_dead_letters() -> None:
    assert full_graph().uses_dead_letter()
    assert not define_group("g", Input("a", S, cb, on_decode_error="skip")).uses_dead_letter()
    assert define_group("g", Input("a", S, cb, on_decode_error="dead_letter")).uses_dead_letter()


def test_edges_may_be_passed_as_lists_or_tuples() -> None:
    g = define_group("g", [Input("a", S, cb), Persist(S)], (Output("o", S),))
    assert [type(e).__name__ for e in g.edges] == ["Input", "Persist", "Output"]


def test_codec_classes_are_instantiated() -> None:
    g = define_group("g", Input("a", codecs.String, cb), Persist(codecs.Int))  # type: ignore[arg-type]
    assert isinstance(g.inputs[0].codec, codecs.String)
    assert isinstance(g.persist.codec, codecs.Int)  # type: ignore[union-attr]


def test_repr_names_the_group_and_its_edges() -> None:
    g = define_group("g", Input("a", S, cb), Persist(S), Join("users", S), Output("o", S))
    assert repr(g) == "GroupGraph('g', Input('a'), Persist, Join('users'), Output('o'))"


def test_graphs_are_immutable() -> None:
    g = define_group("g", Input("a", S, cb))
    with pytest.raises(AttributeError):
        g.group = "other"  # type: ignore[misc]


# -- graph validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edges", "message"),
    [
        ((), r"group 'g' has no Input edge; add Input\(topic, codec, callback\)"),
        ((Persist(S),), r"has no Input edge; add Input"),
        ((Loop(S, cb), Persist(S)), r"has no Input edge"),
        ((Input("a", S, cb), Persist(S), Persist(S)), r"2 Persist edges; a group has at most one"),
        ((Input("a", S, cb), Loop(S, cb), Loop(S, cb)), r"2 Loop edges; a group has at most one"),
        (
            (Input("a", S, cb), Input("a", S, other_cb)),
            r"topic 'a' is used by both Input\('a'\) and Input\('a'\); each topic may appear",
        ),
        ((Input("a", S, cb), Output("a", S)), r"used by both Input\('a'\) and Output\('a'\)"),
        ((Input("a", S, cb), Join("a", S)), r"used by both Input\('a'\) and Join\('a'\)"),
        ((Input("a", S, cb), Lookup("a", S)), r"used by both Input\('a'\) and Lookup\('a'\)"),
        (
            (Input("a", S, cb), Join("t", S), Lookup("t", S)),
            r"used by both Join\('t'\) and Lookup\('t'\)",
        ),
        ((Input("a", S, cb), Output("o", S), Output("o", S)), r"topic 'o' is used by both"),
        (
            (Input("a", S, cb), Join("g-table", S)),
            r"Join\('g-table'\) names the group's table; use ctx.value\(\)/set_value\(\)",
        ),
        ((Input("a", S, cb), Lookup("g-table", S)), r"Lookup\('g-table'\) names the group's table"),
        ((Input("g-table", S, cb),), r"Input\('g-table'\) names the group's table"),
        ((Input("a", S, cb), Output("g-table", S)), r"Output\('g-table'\) names the group's table"),
        (
            (Input("a", S, cb), Output("g-loop", S)),
            r"Output\('g-loop'\) names the group's loop topic; use a Loop edge and ctx.loopback",
        ),
        ((Input("g-loop", S, cb),), r"Input\('g-loop'\) names the group's loop topic"),
        ((Input("a", S, cb), "not an edge"), r"'not an edge' is not an edge; use Input, Persist"),
        ((Input("a", S, cb), None), r"None is not an edge"),
        ((Input("a", S, cb), [[Persist(S)]]), r"is not an edge"),
    ],
)
def test_malformed_graphs_are_rejected_with_what_to_fix(
    edges: tuple[Any, ...], message: str
) -> None:
    with pytest.raises(GraphError, match=message):
        define_group("g", *edges)


def test_another_groups_table_may_be_joined_and_emitted_to() -> None:
    g = define_group("g", Input("a", S, cb), Join("h-table", S), Output("i-table", S))
    assert [j.table for j in g.joins] == ["h-table"]


def test_graph_errors_are_goka_ray_errors() -> None:
    with pytest.raises(GokaRayError):
        define_group("g")


# -- group names ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["my group", "", "a/b", "ü", "g\n", None, 5, "x" * 244])
def test_group_names_that_cannot_name_topics_are_rejected(name: Any) -> None:
    with pytest.raises(GraphError, match="is not usable: it names the topics"):
        define_group(name, Input("a", S, cb))


@pytest.mark.parametrize("name", ["g", "my.group_1-A", "x" * 243])
def test_group_names_from_topic_characters_are_accepted(name: str) -> None:
    assert define_group(name, Input("a", S, cb)).table_topic == f"{name}-table"


# -- edge validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "topic", ["bad topic", "", ".", "..", "a\n", "t/x", "ü", "x" * 250, 5, None]
)
@pytest.mark.parametrize(
    "make",
    [
        lambda t: Input(t, S, cb),
        lambda t: Output(t, S),
        lambda t: Join(t, S),
        lambda t: Lookup(t, S),
    ],
    ids=["Input", "Output", "Join", "Lookup"],
)
def test_invalid_topic_names_are_rejected_by_every_edge(make: Any, topic: Any) -> None:
    with pytest.raises(GraphError, match=r"not a valid Kafka topic name; use 1-249 characters"):
        make(topic)


def test_a_249_character_topic_name_is_valid() -> None:
    assert Input("x" * 249, S, cb).topic == "x" * 249


@pytest.mark.parametrize("callback", [42, "cb", None])
def test_a_callback_that_is_not_callable_is_rejected(callback: Any) -> None:
    with pytest.raises(GraphError, match=r"Input\('a'\): callback .* is not callable; pass a"):
        Input("a", S, callback)
    with pytest.raises(GraphError, match=r"Loop: callback .* is not callable"):
        Loop(S, callback)


@pytest.mark.parametrize(
    "callback",
    [lambda: None, lambda ctx: None, lambda ctx, msg, extra: None, lambda ctx, msg, *, kw: None],
    ids=["no-args", "one-arg", "three-args", "required-keyword"],
)
def test_a_callback_that_cannot_take_ctx_and_msg_is_rejected(callback: Any) -> None:
    with pytest.raises(GraphError, match=r"cannot be called as callback\(ctx, msg\)"):
        Input("a", S, callback)
    with pytest.raises(GraphError, match=r"cannot be called as callback\(ctx, msg\)"):
        Loop(S, callback)


def test_an_async_callback_is_rejected() -> None:
    async def handler(ctx: Context, msg: Any) -> None:
        pass

    with pytest.raises(GraphError, match="is async; callbacks run synchronously"):
        Input("a", S, handler)  # type: ignore[arg-type]


def test_callbacks_may_be_methods_partials_callable_objects_and_varargs() -> None:
    class Handler:
        def on(self, ctx: Context, msg: Any) -> None:
            pass

        def __call__(self, ctx: Context, msg: Any) -> None:
            pass

    def with_config(config: str, ctx: Context, msg: Any) -> None:
        pass

    def anything(*args: Any, **kwargs: Any) -> None:
        pass

    for callback in (
        Handler().on,
        Handler(),
        functools.partial(with_config, "c"),
        anything,
        lambda ctx, msg, extra=1: None,
    ):
        assert Input("a", S, callback).callback is callback


@pytest.mark.parametrize(
    "make",
    [
        lambda c: Input("a", c, cb),
        lambda c: Persist(c),
        lambda c: Join("t", c),
        lambda c: Lookup("t", c),
        lambda c: Loop(c, cb),
        lambda c: Output("o", c),
    ],
    ids=["Input", "Persist", "Join", "Lookup", "Loop", "Output"],
)
def test_a_codec_that_is_not_a_codec_is_a_graph_error_naming_the_edge(make: Any) -> None:
    with pytest.raises(GraphError, match=r"'json' is not a codec") as info:
        make("json")
    assert isinstance(info.value.__cause__, CodecError)
    with pytest.raises(GraphError, match="class int is not a codec"):
        make(int)


def test_codec_error_message_names_the_edge() -> None:
    with pytest.raises(GraphError, match=r"^Join\('users'\): 'json' is not a codec"):
        Join("users", "json")  # type: ignore[arg-type]


@pytest.mark.parametrize("policy", ["fail", "skip", "dead_letter"])
def test_decode_error_policies_are_accepted(policy: Any) -> None:
    assert Input("a", S, cb, on_decode_error=policy).on_decode_error == policy
    assert Loop(S, cb, on_decode_error=policy).on_decode_error == policy


def test_an_unknown_decode_error_policy_is_rejected_with_the_choices() -> None:
    with pytest.raises(
        GraphError,
        match=r"Input\('a'\): on_decode_error='ignore'; choose one of \('fail', 'skip', 'dead_letter'\)",
    ):
        Input("a", S, cb, on_decode_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(GraphError, match="Loop: on_decode_error='drop'; choose one of"):
        Loop(S, cb, on_decode_error="drop")  # type: ignore[arg-type]


@pytest.mark.parametrize("policy", ["ignore", "process", "decode"])
def test_nil_policies_are_accepted(policy: Any) -> None:
    assert Input("a", S, cb, nil=policy).nil == policy


def test_an_unknown_nil_policy_is_rejected_with_the_choices() -> None:
    with pytest.raises(
        GraphError, match=r"nil='drop'; choose one of \('ignore', 'process', 'decode'\)"
    ):
        Input("a", S, cb, nil="drop")  # type: ignore[arg-type]
