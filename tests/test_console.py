"""The CLI's status table fits the terminal: columns are left out by priority, never cut."""

from __future__ import annotations

import pytest
from rich.console import Console

from goka_ray.control.status import GroupStatus, PartitionStatus
from goka_ray.core.stats import PartitionStats
from goka_ray.tools.console import STATUS_COLUMNS, status_table


def group(state: str = "running", error: str | None = None) -> GroupStatus:
    parts = [
        PartitionStatus(
            p,
            "recovering" if p == 3 else "running",
            node_id="80968b1c1234abcd",
            actor_name="goka-ray/clicks/worker-39d89e12",
            restarts=1,
            epoch=3,
            stats=PartitionStats(
                offsets={"user-clicks": 1_146_100 + p},
                lag={"user-clicks": 12_000},
                keys=17,
                processed=11_461,
            ),
        )
        for p in range(4)
    ]
    return GroupStatus("clicks", state, parts, error)


def render(table: object, width: int) -> str:
    console = Console(width=width, force_terminal=False, color_system=None)
    with console.capture() as capture:
        console.print(table)
    return capture.get()


@pytest.mark.parametrize("width", [40, 60, 80, 100, 120])
def test_the_status_table_fits_the_width_without_cutting_a_cell(width: int) -> None:
    text = render(status_table(group(), width), width)
    assert "…" not in text
    assert all(len(line) <= width for line in text.splitlines())
    header = next(line for line in text.splitlines() if "part" in line)
    shown = [c for c in STATUS_COLUMNS if f" {c} " in header]
    assert {"part", "state", "lag"} <= set(shown)
    hidden = [c for c in STATUS_COLUMNS if c not in shown]
    if hidden:
        assert f"not shown (too narrow): {', '.join(hidden)}" in " ".join(text.split())
    assert "1,146,102" in text or "offsets" in hidden


def test_a_wide_terminal_shows_every_column_and_the_error() -> None:
    error = "ProcessingError: group 'clicks' failed on user-clicks[2]@17 key='poison'"
    text = render(status_table(group("failed", error), 140), 140)
    assert all(f" {c} " in text for c in STATUS_COLUMNS)
    assert "not shown" not in text
    assert f"error: {error}" in " ".join(text.split())


def test_an_error_is_shown_as_written_even_when_it_looks_like_markup() -> None:
    error = "ValueError: cannot parse [bold]x[/bold] in clicks[2]@17"
    text = render(status_table(group("failed", error), 120), 120)
    assert f"error: {error}" in " ".join(text.split())


def test_standby_nodes_placement_warnings_and_scaling_decisions_are_shown() -> None:
    from dataclasses import replace

    from goka_ray.control.status import ScalingDecision

    base = group()
    parts = [replace(p, standby_nodes=["5f3e21aa0000"]) for p in base.partitions]
    warning = "partition 0: its standby shares node 80968b1c with its owner; add a node"
    decision = ScalingDecision(0.0, 1, 4, "lag 5,210 per partition above the target 1,000")
    status = replace(
        base,
        partitions=parts,
        actors=4,
        warnings=[warning],
        autoscaling="4 actors in [1, 4], target lag 1,000/partition",
        scaling=[decision],
    )
    text = " ".join(render(status_table(status, 160), 160).split())
    assert "group clicks: running on 4 actors" in text
    assert " standby " in text and "5f3e21aa" in text
    assert f"warning: {warning}" in text
    assert "autoscaling: 4 actors in [1, 4]" in text
    assert "1 -> 4 actors: lag 5,210 per partition above the target 1,000" in text
