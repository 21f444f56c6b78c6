"""Throughput of the partition runner against a raw confluent-kafka loop, in one run.

    python -m bench.throughput [--messages 500000] [--keys 10000] [--partitions 4]
                               [--recovery-keys 1000000]

Starts the local broker, pre-fills a topic, then measures on the same data:
  (a) raw: one confluent-kafka consumer counting into a dict (no state, no writes);
  (b) runner: the PartitionRunners counting into LevelDB tables with changelog writes;
and recovery speed (keys/s) of a runner rebuilding a table from a changelog.
Prints msgs/s and the ratio runner/raw.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections import Counter

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition
from tqdm import tqdm

from bench.harness import fill
from goka_ray import Context, Input, Persist, codecs, define_group
from goka_ray.kafka.clients import make_consumer
from goka_ray.kafka.runner import PartitionRunner, RunnerState
from goka_ray.kafka.topics import TopicManager
from goka_ray.tools.local import LocalKafka


def count(ctx: Context, msg: bytes) -> None:
    ctx.set_value((ctx.value() or 0) + 1)


def raw_loop(brokers: str, topic: str, partitions: int, n: int) -> float:
    consumer = make_consumer(brokers, f"bench-raw-{time.monotonic_ns()}")
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    counts: Counter[bytes] = Counter()
    seen = 0
    started = time.perf_counter()
    while seen < n:
        for m in consumer.consume(5000, timeout=1.0):
            if m.error() is not None:
                if m.error().code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(m.error())
                continue
            counts[m.key()] += 1
            seen += 1
    elapsed = time.perf_counter() - started
    consumer.close()
    return n / elapsed


def runner_loop(brokers: str, topic: str, partitions: int, n: int, actors_dir: str) -> float:
    graph = define_group(
        f"bench-{time.monotonic_ns()}", Input(topic, codecs.Bytes(), count), Persist(codecs.Int())
    )
    with TopicManager(brokers) as topics:
        topics.ensure_group_topics(graph)
    runners = [
        PartitionRunner(brokers, graph, p, storage_dir=actors_dir) for p in range(partitions)
    ]
    for r in runners:
        r.recover()
        r.start_processing()
    started = time.perf_counter()
    done = 0
    # one thread, round robin: the fairest comparison with the single-threaded raw loop
    while done < n:
        for r in runners:
            done += r.run_once()
    elapsed = time.perf_counter() - started
    for r in runners:
        r.close()
    assert all(r.state == RunnerState.STOPPED for r in runners)
    return n / elapsed


def recovery(brokers: str, keys: int, storage_dir: str) -> float:
    group = f"bench-rec-{time.monotonic_ns()}"
    graph = define_group(group, Input(f"{group}-in", codecs.Bytes(), count), Persist(codecs.Int()))
    with TopicManager(brokers) as topics:
        topics.ensure_stream(f"{group}-in", 1)
        topics.ensure_group_topics(graph)
    fill(brokers, graph.table_topic, keys, keys, codecs.Int().encode(1), "fill changelog")
    runner = PartitionRunner(brokers, graph, 0, storage_dir=storage_dir)
    progress = tqdm(total=keys, desc="recover", unit="key", unit_scale=True)
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.5):
            progress.n = runner.status().recovered
            progress.refresh()

    threading.Thread(target=watch, daemon=True).start()
    started = time.perf_counter()
    recovered = runner.recover()
    elapsed = time.perf_counter() - started
    stop.set()
    progress.n = recovered
    progress.close()
    keys_stored = runner.status().keys
    runner.close()
    assert recovered == keys and keys_stored == keys, (recovered, keys_stored)
    return keys / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--messages", type=int, default=500_000)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--recovery-keys", type=int, default=1_000_000)
    args = ap.parse_args()
    with LocalKafka() as kafka, tempfile.TemporaryDirectory() as tmp:
        brokers = kafka.bootstrap_servers
        topic = "bench-clicks"
        with TopicManager(brokers) as topics:
            topics.ensure_stream(topic, args.partitions)
        fill(brokers, topic, args.messages, args.keys, b"x" * 100, "fill input")
        raw = raw_loop(brokers, topic, args.partitions, args.messages)
        print(f"raw confluent-kafka loop : {raw:>12,.0f} msgs/s")
        run = runner_loop(brokers, topic, args.partitions, args.messages, tmp)
        print(f"PartitionRunner (table)  : {run:>12,.0f} msgs/s   ratio {run / raw:.2f}")
        rec = recovery(brokers, args.recovery_keys, tmp)
        print(f"recovery, 1 partition    : {rec:>12,.0f} keys/s   ({args.recovery_keys:,} keys)")


if __name__ == "__main__":
    main()
