from __future__ import annotations

import pytest

from goka_ray import (
    GraphError,
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

S = codecs.String()


def cb(ctx, msg):  # type: ignore[no-untyped-def]
    pass


def test_table_and_loop_names_derive_from_the_group():
    assert table("clicks") == "clicks-table"
    assert loop_stream("clicks") == "clicks-loop"
    g = define_group("clicks", Input("in", S, cb), Persist(S))
    assert (g.table_topic, g.loop_topic, g.dead_letter_topic) == (
        "clicks-table",
        "clicks-loop",
        "clicks-dlq",
    )


def test_copartitioned_topics_are_inputs_loop_table_and_joins_not_lookups():
    g = define_group(
        "g",
        Input("a", S, cb),
        Input("b", S, cb),
        Loop(S, cb),
        Persist(S),
        Join("users", S),
        Lookup("prices", S),
        Output("out", S),
    )
    assert g.copartitioned_topics() == ["a", "b", "g-loop", "g-table", "users"]
    assert g.stream_topics() == ["a", "b", "g-loop"]


@pytest.mark.parametrize(
    ("edges", "message"),
    [
        ((Persist(S),), "has no Input edge; add Input"),
        ((Input("a", S, cb), Persist(S), Persist(S)), "2 Persist edges"),
        ((Input("a", S, cb), Loop(S, cb), Loop(S, cb)), "2 Loop edges"),
        ((Input("a", S, cb), Input("a", S, cb)), "topic 'a' is used by both"),
        ((Input("a", S, cb), Output("a", S)), "topic 'a' is used by both"),
        ((Input("a", S, cb), Join("a", S)), "topic 'a' is used by both"),
        ((Input("a", S, cb), Join("g-table", S)), "names the group's table"),
        ((Input("a", S, cb), Lookup("g-table", S)), "names the group's table"),
        ((Input("a", S, cb), Output("g-loop", S)), "use a Loop edge"),
        ((Input("a", S, cb), "not an edge"), "is not an edge"),
    ],
)
def test_malformed_graphs_are_rejected_with_what_to_fix(edges, message):
    with pytest.raises(GraphError, match=message):
        define_group("g", *edges)


def test_edges_validate_themselves():
    with pytest.raises(GraphError, match="callback 42 is not callable"):
        Input("a", S, 42)  # type: ignore[arg-type]
    with pytest.raises(GraphError, match="not a valid Kafka topic name"):
        Input("bad topic", S, cb)
    with pytest.raises(GraphError, match="on_decode_error='ignore'"):
        Input("a", S, cb, on_decode_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(GraphError, match="nil='drop'"):
        Input("a", S, cb, nil="drop")  # type: ignore[arg-type]


def test_group_names_must_make_valid_topic_names():
    with pytest.raises(GraphError, match="group name 'my group' is not usable"):
        define_group("my group", Input("a", S, cb))


def test_edges_may_be_passed_as_lists_and_codec_classes():
    g = define_group("g", [Input("a", codecs.String, cb), Persist(codecs.Int)])
    assert isinstance(g.persist.codec, codecs.Int)  # type: ignore[union-attr]
