"""The cyclic garbage collector of actor processes (goka_ray.actors.collector)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> str:
    # in a process of its own: the collector settings are the whole process's
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_settle_collector_freezes_what_exists_and_keeps_the_thresholds() -> None:
    out = _run(
        """
        import gc
        from goka_ray.actors.collector import settle_collector
        before = gc.get_threshold()
        assert gc.get_freeze_count() == 0
        settle_collector()
        frozen = gc.get_freeze_count()
        assert frozen > 1000, frozen  # the modules imported so far
        assert gc.get_threshold() == before
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
    assert out.startswith("ok")


def test_garbage_cycles_of_callbacks_do_not_pile_up_after_settling() -> None:
    # a callback that makes a reference cycle per message holding 8 KB: 60,000 of them are
    # 480 MB if none is collected; a young threshold of 100,000 (an earlier setting) held them
    # all at once (780-860 MB per partition actor)
    out = _run(
        """
        import resource
        from goka_ray.actors.collector import settle_collector
        settle_collector()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for _ in range(60_000):
            d = {"payload": bytearray(8192)}
            d["self"] = d
            del d
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        print("grown", round(grown_mb))
        """
    )
    grown = int(out.split()[-1])
    assert grown < 120, f"peak memory grew {grown} MB: garbage cycles were held, not collected"
