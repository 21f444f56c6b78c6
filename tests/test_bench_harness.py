"""The benchmark harness: percentiles as documented, and `python -m bench` knows every benchmark."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import BENCHMARKS
from bench.harness import Percentiles

ROOT = Path(__file__).resolve().parent.parent
NOT_BENCHMARKS = {"__init__", "__main__", "harness", "quix_count"}


def test_percentiles_are_nearest_rank() -> None:
    p = Percentiles.of([float(i) for i in range(100, 0, -1)])  # 1..100, unordered
    assert (p.p50, p.p99, p.max, p.n) == (50.0, 99.0, 100.0, 100)
    one = Percentiles.of([0.25])
    assert (one.p50, one.p99, one.max) == (0.25, 0.25, 0.25)


def test_percentiles_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        Percentiles.of([])


def test_every_benchmark_module_is_registered_and_listed() -> None:
    modules = {p.stem for p in (ROOT / "bench").glob("*.py")} - NOT_BENCHMARKS
    assert modules == set(BENCHMARKS)
    listed = subprocess.run(
        [sys.executable, "-m", "bench", "--list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert [line.split()[0] for line in listed.splitlines()] == list(BENCHMARKS)


def test_an_unknown_benchmark_is_refused_with_the_choices() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench", "no_such_bench"], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode != 0
    assert "no_such_bench" in run.stderr and "latency" in run.stderr
