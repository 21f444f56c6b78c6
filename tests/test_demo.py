"""The README's first command: the demo runs on a fresh machine and checks its own counts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path


def _final_rate(stderr: str, bar: str) -> float:
    """Messages per second shown by the last state of a tqdm bar (``12,345.67msg/s``)."""
    frames = [f for f in re.split(r"[\r\n]", stderr) if f.startswith(f"{bar}: 100%")]
    assert frames, f"no finished {bar!r} bar in: {stderr[-2000:]}"
    match = re.search(r"([\d.]+)msg/s\]", frames[-1])
    assert match, frames[-1]
    return float(match.group(1))


def test_demo_counts_every_click_and_exits_cleanly() -> None:
    # its own Ray temp dir (short: Ray's socket paths are limited to 107 bytes)
    tmp_path = Path(tempfile.mkdtemp(prefix="grdemo", dir="/tmp"))
    env = {**os.environ, "RAY_TMPDIR": str(tmp_path)}
    env.pop("RAY_ADDRESS", None)
    goka_ray = str(Path(sys.executable).parent / "goka-ray")
    proc = subprocess.run(
        [goka_ray, "demo", "--clicks", "5000", "--users", "30"],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "all 30 user counts equal the 5,000 clicks emitted" in out
    assert "top 10 users, read through a View" in out
    assert "group clicks: running" in out
    # both bars run from the first click: processing cannot finish before the last click was
    # emitted, so its average rate is at most the emit rate (it once showed 30,373,698 msg/s)
    assert _final_rate(proc.stderr, "process") <= _final_rate(proc.stderr, "emit clicks") * 1.01
    # Ray's own start-up notices are not shown (only its errors would be)
    assert "Started a local Ray instance" not in proc.stderr
    assert "Token authentication" not in proc.stderr
    # the demo leaves no Ray or broker process behind
    leftovers = subprocess.run(
        ["pgrep", "-f", str(tmp_path)], capture_output=True, text=True
    ).stdout.split()
    assert leftovers == []
