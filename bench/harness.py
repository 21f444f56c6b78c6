"""What every benchmark shares: pre-filling topics, a local Ray, percentiles, CPU meters.

Each benchmark in ``bench/`` is a module run as ``python -m bench.<name>`` that starts what it
needs (the local broker, a local Ray), measures its baseline and its subject in the same run,
and prints both and their ratio. ``python -m bench`` runs them in turn (``bench/__main__.py``
lists them); a new benchmark is a module with a ``main()`` plus one entry there.

The machine is shared and small (2 cores): the meters here report the CPU the broker and the
forwarders used, and how busy the whole machine was, so a figure can be read against its load.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import psutil
from tqdm import tqdm

from goka_ray.kafka.clients import make_producer
from goka_ray.tools.local import LocalKafka

__all__ = ["CpuMeter", "Percentiles", "broker_process", "fill", "local_ray"]


def fill(brokers: str, topic: str, n: int, keys: int, value: bytes, desc: str) -> None:
    """Produce ``n`` messages of ``value`` to ``topic``, keyed ``key-<i>`` over ``keys`` keys
    (each key once, in order, when ``keys >= n``; else drawn at random, seeded), partitioned by
    murmur2 as goka-ray partitions; in large batches (few record batches keep the local
    broker's fetches cheap)."""
    producer = make_producer(brokers, config={"linger.ms": 50, "batch.num.messages": 10000})
    rng = random.Random(1)
    names = [f"key-{i}".encode() for i in range(keys)]
    for i in tqdm(range(n), desc=desc, unit="msg", unit_scale=True, mininterval=1):
        key = names[i % keys] if keys >= n else names[rng.randrange(keys)]
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120):
        raise RuntimeError(f"filling {topic}: the broker did not acknowledge every message")


@dataclass(frozen=True)
class Percentiles:
    """p50, p99 and max of latency samples, in seconds (nearest-rank percentiles)."""

    p50: float
    p99: float
    max: float
    n: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Percentiles:
        if not samples:
            raise ValueError("no samples")
        ordered = sorted(samples)

        def rank(q: float) -> float:
            return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

        return cls(rank(0.50), rank(0.99), ordered[-1], len(ordered))


class CpuMeter:
    """CPU used by some processes over a window, as a share of one core (1.0 = a full core),
    and how busy the whole machine was (share of all its cores).

        meter = CpuMeter({"broker": pid}); ...; used = meter.stop()  # {"broker": 0.31, ...}
    """

    def __init__(self, pids: dict[str, int | Sequence[int]]) -> None:
        self._groups = {
            name: [psutil.Process(p) for p in ([pids] if isinstance(pids, int) else pids)]
            for name, pids in pids.items()
        }
        self._start = {name: self._used(procs) for name, procs in self._groups.items()}
        self._machine = psutil.cpu_times()
        self._wall = time.monotonic()

    @staticmethod
    def _used(procs: list[psutil.Process]) -> float:
        total = 0.0
        for proc in procs:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def stop(self) -> dict[str, float]:
        """Per process group: cores used on average since the meter started; and ``machine``:
        the share of the machine's cores that were busy."""
        wall = time.monotonic() - self._wall
        out = {
            name: (self._used(procs) - self._start[name]) / wall
            for name, procs in self._groups.items()
        }
        before, after = self._machine, psutil.cpu_times()
        idle = (after.idle + getattr(after, "iowait", 0.0)) - (
            before.idle + getattr(before, "iowait", 0.0)
        )
        total = sum(after) - sum(before)
        out["machine"] = 1.0 - idle / total if total > 0 else 0.0
        return out


def broker_process(kafka: LocalKafka) -> int:
    """The pid of the local broker ``kafka`` started (a child of this process)."""
    address = kafka.bootstrap_servers
    for child in psutil.Process().children():
        try:
            cmdline = child.cmdline()
        except psutil.NoSuchProcess:
            continue
        if "broker" in cmdline and any(address in arg for arg in cmdline):
            return child.pid
    raise RuntimeError(f"no broker process for {address} among this process's children")


@contextmanager
def local_ray(namespace: str, num_cpus: int = 2) -> Iterator[None]:
    """A local Ray of its own (never an existing cluster), shut down on exit."""
    import ray

    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        namespace=namespace,
        log_to_driver=False,
    )
    try:
        yield
    finally:
        ray.shutdown()
