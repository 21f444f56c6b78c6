"""The demo (``make demo`` or ``goka-ray demo``): local broker, local Ray, a click counter.

It starts a Kafka-protocol broker and a Ray instance on this machine, emits a stream of clicks,
counts them per user in a processor group whose partitions run as Ray actors, and reads the
top users through a View. It checks every count against what it emitted and exits.
"""

from __future__ import annotations

import argparse
import logging
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass

from rich.console import Console
from tqdm import tqdm

from goka_ray.core.codecs import String
from goka_ray.examples import click_counter
from goka_ray.kafka.emitter import Emitter
from goka_ray.kafka.topics import TopicManager
from goka_ray.ray.processor import Processor
from goka_ray.ray.view import View
from goka_ray.tools.console import make_console, status_table, top_table
from goka_ray.tools.local import LocalKafka

__all__ = ["DemoResult", "main", "run_demo"]

TOPIC = "user-clicks"
GROUP = "clicks"
NAMESPACE = "goka-ray-demo"


@dataclass(frozen=True)
class DemoResult:
    """What the demo did: emitted clicks, the top users read through the View, mismatches."""

    clicks: int
    users: int
    top: list[tuple[str, int]]
    mismatches: dict[str, tuple[int, int]]
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.mismatches


def run_demo(
    *,
    clicks: int = 100_000,
    users: int = 100,
    partitions: int = 4,
    actors: int = 2,
    top: int = 10,
    seed: int = 7,
    console: Console | None = None,
    progress: bool = True,
) -> DemoResult:
    """Run the whole demo; returns what it measured (the CLI prints it)."""
    import ray

    out = console or make_console()
    started = time.monotonic()
    rng = random.Random(seed)
    truth: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="goka-ray-demo-") as storage, LocalKafka() as kafka:
        brokers = kafka.bootstrap_servers
        out.print(f"[bold]1.[/] local Kafka-protocol broker on {brokers}")
        ray.init(
            address="local",
            num_cpus=2,
            namespace=NAMESPACE,
            include_dashboard=False,
            log_to_driver=False,
        )
        try:
            cpus = ray.cluster_resources().get("CPU", 0)  # type: ignore[no-untyped-call]
            out.print(f"[bold]2.[/] local Ray started ({cpus:g} CPUs)")
            with TopicManager(brokers) as topics:
                topics.ensure_stream(TOPIC, partitions)
            config = {
                "storage_dir": storage,
                "namespace": NAMESPACE,
                "groups": {GROUP: {"actors": actors, "num_cpus": 0.25}},
            }
            processor = Processor(brokers, click_counter(GROUP, TOPIC), config)
            processor.start()
            processor.wait_ready(120)
            out.print(
                f"[bold]3.[/] group [cyan]{GROUP}[/] runs {partitions} partitions "
                f"on {actors} partition actors"
            )
            with Emitter(brokers, TOPIC, String()) as emitter:
                for _ in tqdm(range(clicks), desc="emit clicks", unit="msg", disable=not progress):
                    user = f"user-{int(rng.paretovariate(1.2)) % users:03d}"
                    truth[user] += 1
                    emitter.emit(user, "click")
                emitter.flush(60)
            _wait_processed(processor, clicks, progress)
            view = processor.view()
            view.wait_ready(60)
            counts = _wait_view(view, truth, timeout=60)
            out.print(status_table(processor.status()))
            best = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
            out.print(top_table(best, f"top {top} users, read through a View", "clicks"))
            mismatches = {
                u: (counts.get(u, 0), n) for u, n in truth.items() if counts.get(u, 0) != n
            }
            if mismatches:
                out.print(f"[red]{len(mismatches)} counts differ from what was emitted[/]")
            else:
                out.print(
                    f"[green]all {len(truth)} user counts equal the {clicks:,} clicks emitted[/]"
                )
            view.stop()
            processor.stop()
        finally:
            ray.shutdown()
    return DemoResult(clicks, len(truth), best, mismatches, time.monotonic() - started)


def _wait_processed(processor: Processor, clicks: int, progress: bool) -> None:
    with tqdm(total=clicks, desc="process", unit="msg", disable=not progress) as bar:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            status = processor.status()
            done = sum(p.processed for p in status.partitions)
            bar.update(done - bar.n)
            if done >= clicks:
                return
            time.sleep(0.2)
    raise TimeoutError(f"the group processed fewer than {clicks} clicks within 300 s")


def _wait_view(view: View, truth: Counter[str], timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        counts: dict[str, int] = {k: v for k, v in view.get_many(truth).items() if v is not None}
        if counts == dict(truth) or time.monotonic() > deadline:
            return counts
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="goka-ray demo", description=__doc__)
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clicks", type=int, default=100_000, help="clicks to emit")
    parser.add_argument("--users", type=int, default=100, help="distinct users")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the topic")
    parser.add_argument("--actors", type=int, default=2, help="partition actors")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_from_args(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING)
    result = run_demo(
        clicks=args.clicks,
        users=args.users,
        partitions=args.partitions,
        actors=args.actors,
        progress=not args.no_progress,
    )
    make_console().print(f"done in {result.seconds:.1f} s")
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
