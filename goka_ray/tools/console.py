"""Terminal and notebook rendering of status (rich tables); used by the CLI and the demo."""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console
from rich.table import Table

from goka_ray.control.status import GroupStatus

__all__ = ["make_console", "status_table", "top_table"]

_STATE_STYLE = {
    "running": "green",
    "recovering": "yellow",
    "recovered": "yellow",
    "starting": "yellow",
    "failed": "bold red",
    "lost": "red",
    "stopped": "dim",
}


def make_console() -> Console:
    """A console that does not squeeze tables to 80 columns when output is piped."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    return console


def _short(text: str | None, width: int) -> str:
    if not text:
        return "-"
    return text if len(text) <= width else text[:width]


def status_table(status: GroupStatus) -> Table:
    """One row per partition: state, actor, node, offsets, lag, keys, counters, restarts."""
    table = Table(
        title=f"group {status.group}: {status.state}  (keys {status.keys:,}, lag {status.lag:,})",
        title_justify="left",
    )
    for name, justify in (
        ("part", "right"),
        ("state", "left"),
        ("actor", "left"),
        ("node", "left"),
        ("offsets", "left"),
        ("lag", "right"),
        ("keys", "right"),
        ("processed", "right"),
        ("restarts", "right"),
        ("epoch", "right"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for p in status.partitions:
        style = _STATE_STYLE.get(p.state, "")
        actor = _short((p.actor_name or "-").rsplit("/", 1)[-1], 13)
        if len(p.offsets) == 1:
            offsets = f"{next(iter(p.offsets.values())):,}"
        else:
            offsets = ", ".join(f"{t}:{o:,}" for t, o in sorted(p.offsets.items())) or "-"
        table.add_row(
            str(p.partition),
            f"[{style}]{p.state}[/]" if style else p.state,
            actor,
            _short(p.node_id, 8),
            offsets,
            f"{sum(p.lag.values()):,}",
            f"{p.keys:,}",
            f"{p.processed:,}",
            str(p.restarts),
            str(p.epoch),
        )
    if status.error:
        table.caption = f"[red]error: {status.error}[/]"
    return table


def top_table(rows: Iterable[tuple[str, object]], title: str, value_name: str = "value") -> Table:
    """A two-column key/value table."""
    table = Table(title=title, title_justify="left", min_width=len(title))
    table.add_column("key", no_wrap=True)
    table.add_column(value_name, justify="right")
    for key, value in rows:
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    return table
