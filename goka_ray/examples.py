"""Small processor groups used by the demo, the notebooks and the tests."""

from __future__ import annotations

from goka_ray.core.codecs import Int, String
from goka_ray.core.context import Context
from goka_ray.core.graph import GroupGraph, Input, Persist, define_group


def count_click(ctx: Context, msg: str) -> None:
    """Count messages per key in the group table."""
    ctx.set_value((ctx.value() or 0) + 1)


def click_counter(group: str = "clicks", topic: str = "user-clicks") -> GroupGraph:
    """The canonical example: count clicks per user."""
    return define_group(group, Input(topic, String(), count_click), Persist(Int()))
