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
import threading
import time
from collections import Counter
from dataclasses import dataclass

from rich.console import Console
from tqdm import tqdm

from goka_ray.core.codecs import String
from goka_ray.examples import click_counter
from goka_ray.kafka.emitter import Emitter
from goka_ray.kafka.topics import TopicManager
from goka_ray.ray.cluster import start_local_ray
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
    ray_logging_level: int = logging.ERROR,
) -> DemoResult:
    """Run the whole demo; returns what it measured (the CLI prints it). Ray's own logging
    shows only errors unless ``ray_logging_level`` says otherwise."""
    import ray

    out = console or make_console()
    started = time.monotonic()
    rng = random.Random(seed)
    truth: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="goka-ray-demo-") as storage, LocalKafka() as kafka:
        brokers = kafka.bootstrap_servers
        out.print(f"[bold]1.[/] local Kafka-protocol broker on {brokers}")
        start_local_ray(NAMESPACE, num_cpus=2, logging_level=ray_logging_level)
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
            # both bars start now and run side by side, so each shows its own rate
            processed = _ProcessedBar(processor, clicks, progress)
            with Emitter(brokers, TOPIC, String()) as emitter:
                emit_bar = tqdm(
                    range(clicks),
                    desc="emit clicks",
                    unit="msg",
                    disable=not progress,
                    smoothing=0,
                    position=0,
                )
                for _ in emit_bar:
                    user = f"user-{int(rng.paretovariate(1.2)) % users:03d}"
                    truth[user] += 1
                    emitter.emit(user, "click")
                emitter.flush(60)
            processed.wait(timeout=300)
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


class _ProcessedBar:
    """A progress bar of the messages the group has processed, polled from its status in a
    thread from the moment emitting starts: its rate is processed messages per second of
    the whole run (``smoothing=0``), not of the last poll."""

    def __init__(self, processor: Processor, total: int, progress: bool) -> None:
        self.processor = processor
        self.total = total
        self.bar = tqdm(
            total=total,
            desc="process",
            unit="msg",
            disable=not progress,
            smoothing=0,
            position=1,
        )
        self._done = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._poll, daemon=True, name="demo-progress")
        self._thread.start()

    def _poll(self) -> None:
        try:
            while True:
                status = self.processor.status()
                done = min(self.total, sum(p.processed for p in status.partitions))
                self.bar.update(done - self.bar.n)
                if done >= self.total:
                    return
                time.sleep(0.2)
        except BaseException as exc:
            self.error = exc
        finally:
            self._done.set()

    def wait(self, timeout: float) -> None:
        finished = self._done.wait(timeout)
        self.bar.close()
        if self.error is not None:
            raise self.error
        if not finished:
            raise TimeoutError(f"the group processed fewer than {self.total} clicks in {timeout}s")


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
    from goka_ray.tools.arguments import positive_int

    parser.add_argument(
        "--clicks", type=positive_int, default=100_000, help="clicks to emit (default 100000)"
    )
    parser.add_argument(
        "--users", type=positive_int, default=100, help="distinct users (default 100)"
    )
    parser.add_argument(
        "--partitions", type=positive_int, default=4, help="partitions of the topic (default 4)"
    )
    parser.add_argument(
        "--actors", type=positive_int, default=2, help="partition actors (default 2)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_from_args(args: argparse.Namespace) -> int:
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    result = run_demo(
        ray_logging_level=logging.INFO if verbose else logging.ERROR,
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
