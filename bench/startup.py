"""Start-up of a group against Ray's own floor: the processes it has to start, in one run.

    python -m bench.startup [--actors 1 2 4] [--runs 3]

The throughput target of ``bench.ray_throughput`` counts the wall time from
``Processor.start()``, so a group's start-up is part of every figure there. This benchmark
takes it apart, on an empty input topic (4 partitions) and a local Ray of its own:
  (a) floor: Ray starting as many actors of an empty class as the group starts processes (its
      coordinator and partition actors), all at once, until each answered a call: what Ray's
      worker start (a Python process that imports Ray and connects) costs on this machine;
  (b) goka-ray: ``Processor.start()`` until ``wait_ready`` sees every partition running (the
      coordinator checks topics, restores epochs and places the actors, which recover their
      tables and are told to go), then ``Processor.stop()``;
and the CPU seconds each partition actor's process used up to that point. Prints the median
of ``--runs`` runs of each, and the ratio goka-ray / floor.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import psutil

from bench.harness import local_ray
from goka_ray import Processor
from goka_ray.examples import click_counter
from goka_ray.kafka.topics import TopicManager
from goka_ray.tools.local import LocalKafka

NAMESPACE = "goka-ray-bench-startup"
PARTITIONS = 4


class _Empty:
    """An actor that does nothing: what a Ray process costs before any goka-ray code runs."""

    def pid(self) -> int:
        return os.getpid()


def _cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def ray_floor(processes: int) -> float:
    """Seconds until ``processes`` empty actors, created at once, have each answered."""
    import ray

    empty = ray.remote(num_cpus=0.1)(_Empty)
    started = time.perf_counter()
    actors = [empty.remote() for _ in range(processes)]
    ray.get([a.pid.remote() for a in actors])
    elapsed = time.perf_counter() - started
    for a in actors:
        ray.kill(a)
    return elapsed


def group_start(brokers: str, topic: str, actors: int, storage: str) -> tuple[float, list[float]]:
    """Seconds from ``Processor.start()`` until every partition runs; the CPU seconds of each
    partition actor's process by then."""
    graph = click_counter(f"bench-start-{actors}-{time.time_ns()}", topic)
    config = {
        "storage_dir": storage,
        "namespace": NAMESPACE,
        "groups": {graph.group: {"actors": actors}},
    }
    processor = Processor(brokers, graph, config)
    started = time.perf_counter()
    processor.start()
    status = processor.wait_ready(120)
    elapsed = time.perf_counter() - started
    cpu = [_cpu_seconds(pid) for pid in sorted({p.pid for p in status.partitions if p.pid})]
    processor.stop()
    return elapsed, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--actors", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with (
        LocalKafka() as kafka,
        tempfile.TemporaryDirectory(prefix="bench-start-") as tmp,
        local_ray(NAMESPACE),
    ):
        brokers = kafka.bootstrap_servers
        topic = "bench-start-clicks"
        with TopicManager(brokers) as topics:
            topics.ensure_stream(topic, PARTITIONS)
        time.sleep(3)  # the workers Ray starts with its first driver are up
        rows = []
        for actors in args.actors:
            floors, starts, cpus = [], [], []
            for _ in range(args.runs):  # alternating, so both meet the same load
                floors.append(ray_floor(actors + 1))
                elapsed, cpu = group_start(brokers, topic, actors, tmp)
                starts.append(elapsed)
                cpus.extend(cpu)
                time.sleep(2)  # the stopped group's processes are gone
            rows.append((actors, statistics.median(floors), statistics.median(starts), cpus))
        print(f"\nstart-up on an empty topic of {PARTITIONS} partitions; medians of {args.runs}")
        for actors, floor, start, cpus in rows:
            print(
                f"{actors} actor(s): Ray floor ({actors + 1} empty actors) {floor:5.2f} s   "
                f"goka-ray start -> running {start:5.2f} s   ratio {start / floor:4.2f}   "
                f"CPU per partition actor {statistics.median(cpus):4.2f} s"
            )


if __name__ == "__main__":
    main()
