"""The README's first command: the demo runs on a fresh machine and checks its own counts."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path


def test_demo_counts_every_click_and_exits_cleanly() -> None:
    # its own Ray temp dir (short: Ray's socket paths are limited to 107 bytes)
    tmp_path = Path(tempfile.mkdtemp(prefix="grdemo", dir="/tmp"))
    env = {**os.environ, "RAY_TMPDIR": str(tmp_path)}
    env.pop("RAY_ADDRESS", None)
    goka_ray = str(Path(sys.executable).parent / "goka-ray")
    proc = subprocess.run(
        [goka_ray, "demo", "--clicks", "5000", "--users", "30", "--no-progress"],
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
    # the demo leaves no Ray or broker process behind
    leftovers = subprocess.run(
        ["pgrep", "-f", str(tmp_path)], capture_output=True, text=True
    ).stdout.split()
    assert leftovers == []
