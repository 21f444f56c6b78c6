from goka_ray import Context, Input, Output, Persist, Tester, codecs, define_group, table


def count(ctx: Context, msg: str) -> None:
    ctx.set_value((ctx.value() or 0) + 1)
    ctx.emit("counts", ctx.key, ctx.value())


def test_click_counting_counts_per_key_and_emits_running_totals() -> None:
    graph = define_group(
        "clicks",
        Input("user-clicks", codecs.String(), count),
        Persist(codecs.Int()),
        Output("counts", codecs.Int()),
    )
    t = Tester(graph)
    for user in ["alice", "bob", "alice", "carol", "alice"]:
        t.consume("user-clicks", user, "click")
    assert t.table_value(table("clicks"), "alice") == 3
    assert t.table_items(table("clicks")) == {"alice": 3, "bob": 1, "carol": 1}
    assert [(m.key, m.value) for m in t.messages("counts") if m.key == "alice"] == [
        ("alice", 1),
        ("alice", 2),
        ("alice", 3),
    ]
