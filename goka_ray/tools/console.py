"""Terminal and notebook rendering of status (rich tables); used by the CLI and the demo.

Tables fit the console: the status table drops its least important columns on a narrow
terminal (and says which), instead of cutting rows off at the right edge.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from goka_ray.control.status import GroupStatus, PartitionStatus

__all__ = ["STATUS_COLUMNS", "make_console", "status_table", "top_table"]

_STATE_STYLE = {
    "running": "green",
    "recovering": "yellow",
    "recovered": "yellow",
    "starting": "yellow",
    "scaling": "yellow",
    "upgrading": "yellow",
    "pending": "bold yellow",
    "failed": "bold red",
    "lost": "red",
    "stopped": "dim",
}

#: the status table's columns, in display order
STATUS_COLUMNS = (
    "part",
    "state",
    "actor",
    "node",
    "standby",
    "offsets",
    "lag",
    "keys",
    "processed",
    "restarts",
    "epoch",
)
_RIGHT = {"part", "lag", "keys", "processed", "restarts", "epoch"}
#: dropped first to last when the table does not fit (part, state and lag always stay)
_DROP_ORDER = ("epoch", "standby", "node", "actor", "restarts", "offsets", "keys", "processed")


def make_console(stderr: bool = False) -> Console:
    """A console for the CLI: colours and the terminal's width on a terminal; plain text
    ``COLUMNS`` or else 120 columns wide when output is piped (not squeezed to 80)."""
    console = Console(stderr=stderr)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console = Console(stderr=stderr, width=120)
    return console


def _short(text: str | None, width: int) -> str:
    if not text:
        return "-"
    return text if len(text) <= width else text[:width]


def _cells(p: PartitionStatus) -> dict[str, str]:
    style = _STATE_STYLE.get(p.state, "")
    if len(p.offsets) == 1:
        offsets = f"{next(iter(p.offsets.values())):,}"
    else:
        offsets = ", ".join(f"{t}:{o:,}" for t, o in sorted(p.offsets.items())) or "-"
    return {
        "part": str(p.partition),
        "state": f"[{style}]{p.state}[/]" if style else p.state,
        "actor": _short((p.actor_name or "-").rsplit("/", 1)[-1], 13),
        "node": _short(p.node_id, 8),
        "standby": " ".join(_short(n, 8) for n in p.standby_nodes) or "-",
        "offsets": offsets,
        "lag": f"{sum(p.lag.values()):,}",
        "keys": f"{p.keys:,}",
        "processed": f"{p.processed:,}",
        "restarts": str(p.restarts),
        "epoch": str(p.epoch),
    }


def _build(status: GroupStatus, columns: list[str], hidden: list[str]) -> Table:
    on = f" on {status.actors} actors" if status.actors else ""
    code = f", code {status.code}" if status.code else ""
    table = Table(
        title=f"group {status.group}: {status.state}{on}  (keys {status.keys:,}, "
        f"lag {status.lag:,}{code})",
        title_justify="left",
    )
    for name in columns:
        table.add_column(name, justify="right" if name in _RIGHT else "left", no_wrap=True)
    for p in status.partitions:
        cells = _cells(p)
        table.add_row(*(cells[name] for name in columns))
    notes = []
    if status.error:
        notes.append(f"[red]error: {escape(status.error)}[/]")
    if status.waiting:
        notes.append(f"[yellow]waiting: {escape(status.waiting)}[/]")
    if status.state == "upgrading":
        done = sum(p.code == status.code for p in status.partitions)
        notes.append(f"upgrading to code {status.code}: {done} of {len(status.partitions)} on it")
    notes += [f"[yellow]warning: {escape(w)}[/]" for w in status.warnings]
    if status.autoscaling:
        notes.append(f"autoscaling: {escape(status.autoscaling)}")
    for decision in status.scaling[-3:]:
        at = time.strftime("%H:%M:%S", time.localtime(decision.at))
        notes.append(f"[dim]{at}[/] {escape(str(decision))}")
    if hidden:
        notes.append(f"[dim]not shown (too narrow): {', '.join(hidden)}; --json has all[/]")
    if notes:
        table.caption = "\n".join(notes)
        table.caption_justify = "left"
    return table


def status_table(status: GroupStatus, width: int | None = None) -> Table:
    """One row per partition: state, actor, node, offsets, lag, keys, counters, restarts.

    With ``width`` (the console's), the least important columns are left out until the table
    fits, and the caption names them.
    """
    columns = list(STATUS_COLUMNS)
    hidden: list[str] = []
    table = _build(status, columns, hidden)
    if width is None:
        return table
    rows = [_cells(p) for p in status.partitions]
    for name in _DROP_ORDER:
        if _natural_width(columns, rows) <= width:
            break
        columns.remove(name)
        hidden.append(name)
    if not hidden:
        return table
    return _build(status, columns, [h for h in STATUS_COLUMNS if h in hidden])


def _natural_width(columns: list[str], rows: list[dict[str, str]]) -> int:
    """Width of the table with every cell on one line: each column's widest cell, one space
    of padding on either side and a border line between columns and at both edges."""
    widths = [
        max([len(name)] + [Text.from_markup(row[name]).cell_len for row in rows])
        for name in columns
    ]
    return sum(w + 3 for w in widths) + 1


def top_table(rows: Iterable[tuple[str, object]], title: str, value_name: str = "value") -> Table:
    """A two-column key/value table."""
    table = Table(title=title, title_justify="left", min_width=len(title))
    table.add_column("key", no_wrap=True)
    table.add_column(value_name, justify="right")
    for key, value in rows:
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    return table
