"""The cyclic garbage collector of actor processes (goka_ray.actors.collector)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_settle_collector_freezes_what_exists_and_raises_the_young_threshold() -> None:
    # in a process of its own: the collector settings are the whole process's
    code = textwrap.dedent(
        """
        import gc
        from goka_ray.actors.collector import YOUNG_THRESHOLD, settle_collector
        before = gc.get_threshold()
        assert gc.get_freeze_count() == 0
        settle_collector()
        frozen = gc.get_freeze_count()
        assert frozen > 1000, frozen  # the modules imported so far
        assert gc.get_threshold() == (YOUNG_THRESHOLD, before[1], before[2])
        # cycles made afterwards are still collected
        class Node:
            pass
        a, b = Node(), Node()
        a.other, b.other = b, a
        del a, b
        assert gc.collect() >= 2
        print("ok", frozen)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")
