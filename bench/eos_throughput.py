"""Throughput of at-least-once against exactly-once processing, on the same data, in one run.

    python -m bench.eos_throughput [--messages 300000] [--keys 10000] [--partitions 4]
                                   [--batch-size 5000] [--emit]

Starts the local broker, pre-fills a topic, then runs the PartitionRunners of two groups
over the same messages: one ``at_least_once`` (produce, flush, commit offsets), one
``exactly_once`` (one Kafka transaction per batch: changelog, emits and offsets). Each counts
clicks into its table (changelog writes); with ``--emit`` it also emits one message per
click to an output topic. Prints msgs/s of each and the ratio exactly_once / at_least_once.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from bench.harness import fill
from goka_ray import Context, GroupGraph, Input, Output, Persist, codecs, define_group
from goka_ray.kafka.runner import PartitionRunner, RunnerConfig, RunnerState
from goka_ray.kafka.topics import TopicManager
from goka_ray.tools.local import LocalKafka


def graph_for(group: str, topic: str, output: str | None) -> GroupGraph:
    def count(ctx: Context, msg: bytes) -> None:
        ctx.set_value((ctx.value() or 0) + 1)
        if output is not None:
            ctx.emit(output, ctx.key, msg)

    edges: list[object] = [Input(topic, codecs.Bytes(), count), Persist(codecs.Int())]
    if output is not None:
        edges.append(Output(output, codecs.Bytes()))
    return define_group(group, *edges)  # type: ignore[arg-type]


def run(
    brokers: str,
    topic: str,
    partitions: int,
    n: int,
    storage_dir: str,
    config: RunnerConfig,
    emit: bool,
) -> float:
    group = f"bench-{config.processing_guarantee}-{time.monotonic_ns()}"
    output = f"{group}-out" if emit else None
    graph = graph_for(group, topic, output)
    with TopicManager(brokers) as topics:
        if output is not None:
            topics.ensure_stream(output, partitions)
        topics.ensure_group_topics(graph)
    runners = [
        PartitionRunner(brokers, graph, p, storage_dir=storage_dir, config=config)
        for p in range(partitions)
    ]
    for r in runners:
        r.recover()
        r.start_processing()
    started = time.perf_counter()
    done = 0
    # one thread, round robin, as bench.throughput
    while done < n:
        for r in runners:
            done += r.run_once()
    elapsed = time.perf_counter() - started
    for r in runners:
        r.close()
    assert all(r.state == RunnerState.STOPPED for r in runners)
    return n / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--messages", type=int, default=300_000)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=5000)
    ap.add_argument("--emit", action="store_true", help="also emit one message per input")
    args = ap.parse_args()
    with LocalKafka() as kafka, tempfile.TemporaryDirectory() as tmp:
        brokers = kafka.bootstrap_servers
        topic = "bench-clicks"
        with TopicManager(brokers) as topics:
            topics.ensure_stream(topic, args.partitions)
        fill(brokers, topic, args.messages, args.keys, b"x" * 100, "fill input")
        results = {}
        for guarantee in ("at_least_once", "exactly_once"):
            config = RunnerConfig(batch_size=args.batch_size, processing_guarantee=guarantee)
            rate = run(brokers, topic, args.partitions, args.messages, tmp, config, args.emit)
            results[guarantee] = rate
            print(f"{guarantee:<14}: {rate:>12,.0f} msgs/s")
        ratio = results["exactly_once"] / results["at_least_once"]
        workload = "count + emit" if args.emit else "count"
        print(
            f"exactly_once / at_least_once: {ratio:.2f}  ({args.messages:,} messages, "
            f"{args.partitions} partitions, batch {args.batch_size}, {workload})"
        )


if __name__ == "__main__":
    main()
