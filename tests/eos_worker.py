"""Runs a click counter that also emits one message per click, on every partition, until
killed or sent SIGTERM (used by the exactly-once crash test).

    python eos_worker.py BROKERS GROUP TOPIC OUTPUT PARTITIONS STORAGE_DIR GUARANTEE [CRASH]

Each emitted message has the click's key and, as value, ``<partition>:<offset>`` of the
click, so a reader can tell whether every input was emitted exactly once.

CRASH (``before-commit:N`` or ``after-commit:N``) makes the worker SIGKILL itself at that
point of its N-th transaction: with the batch's records written but not committed, or
committed but not yet in LevelDB.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

from goka_ray import Context, GroupGraph, Input, Output, Persist, codecs, define_group
from goka_ray.kafka.publish import TransactionalPublisher
from goka_ray.kafka.runner import PartitionRunner, RunnerConfig


def counting_graph(group: str, topic: str, output: str) -> GroupGraph:
    def count(ctx: Context, msg: str) -> None:
        ctx.set_value((ctx.value() or 0) + 1)
        ctx.emit(output, ctx.key, f"{ctx.partition}:{ctx.offset}")

    return define_group(
        group,
        Input(topic, codecs.String(), count),
        Output(output, codecs.String()),
        Persist(codecs.Int()),
    )


def crash_at(point: str) -> None:
    """SIGKILL this process around the commit of its N-th transaction (``<where>:<N>``)."""
    where, _, n = point.partition(":")
    count = itertools.count(1)
    lock = threading.Lock()
    commit = TransactionalPublisher._commit_transaction

    def crashing_commit(self: Any) -> None:
        with lock:
            due = next(count) == int(n)
        if due and where == "before-commit":
            os.kill(os.getpid(), signal.SIGKILL)
        commit(self)
        if due and where == "after-commit":
            os.kill(os.getpid(), signal.SIGKILL)

    TransactionalPublisher._commit_transaction = crashing_commit  # type: ignore[method-assign]


def main() -> None:
    brokers, group, topic, output, partitions, storage_dir, guarantee = sys.argv[1:8]
    if len(sys.argv) > 8:
        crash_at(sys.argv[8])
    graph = counting_graph(group, topic, output)
    config = RunnerConfig(batch_size=100, processing_guarantee=guarantee)  # type: ignore[arg-type]
    runners = [
        PartitionRunner(brokers, graph, p, storage_dir=storage_dir, config=config)
        for p in range(int(partitions))
    ]

    def stop(signum: int, frame: FrameType | None) -> None:
        for r in runners:
            r.stop()

    signal.signal(signal.SIGTERM, stop)
    threads = [threading.Thread(target=r.run, daemon=True) for r in runners]
    for t in threads:
        t.start()
    sys.stdout.write("started\n")
    sys.stdout.flush()
    for t in threads:
        while t.is_alive():
            t.join(0.2)  # wake up for signals


if __name__ == "__main__":
    main()
