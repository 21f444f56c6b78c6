"""The Ray path: partition actors on 4 partitions, and View get() latency.

    python -m bench.ray_throughput [--messages 200000] [--keys 10000] [--gets 1000]

In one run: a raw confluent-kafka counting loop (the baseline), then the click counter as
Ray partition actors (1, 2 and 4 actors on 4 partitions) over the same pre-filled topic,
printing msgs/s and the ratio to the raw loop; then View.get() latency (median, p99) from the
driver and from inside a Ray task.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import ray
from tqdm import tqdm

from bench.throughput import fill, raw_loop
from goka_ray import Processor, View, codecs
from goka_ray.examples import click_counter
from goka_ray.kafka.topics import TopicManager
from goka_ray.tools.local import LocalKafka

PARTITIONS = 4


def through_actors(brokers: str, topic: str, n: int, actors: int, storage: str) -> float:
    graph = click_counter(f"bench-ray-{actors}-{time.monotonic_ns()}", topic)
    processor = Processor(
        brokers,
        graph,
        {
            "storage_dir": storage,
            "namespace": "goka-ray-bench",
            "groups": {graph.group: {"actors": actors, "num_cpus": 0.1}},
        },
    )
    processor.start()
    processor.wait_ready(180)

    def done() -> int:
        return sum(p.offsets.get(topic, 0) for p in processor.status().partitions)

    start_count, started = done(), time.perf_counter()
    with tqdm(
        total=n, initial=start_count, desc=f"{actors} actor(s)", unit="msg", unit_scale=True
    ) as bar:
        while (count := done()) < n:
            bar.update(count - bar.n)
            time.sleep(0.2)
        bar.update(count - bar.n)
    elapsed = time.perf_counter() - started
    processor.stop()
    return (n - start_count) / elapsed


def percentiles(samples: list[float]) -> tuple[float, float]:
    samples = sorted(samples)
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


@ray.remote
def gets_in_task(view: View, keys: list[str]) -> list[float]:
    out = []
    for k in keys:
        t = time.perf_counter()
        view.get(k)
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--gets", type=int, default=1_000)
    args = ap.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, namespace="goka-ray-bench", log_to_driver=False)
    with LocalKafka() as kafka, tempfile.TemporaryDirectory() as tmp:
        brokers = kafka.bootstrap_servers
        topic = "bench-ray-clicks"
        with TopicManager(brokers) as topics:
            topics.ensure_stream(topic, PARTITIONS)
        fill(brokers, topic, args.messages, args.keys, b"x" * 100, "fill input")
        raw = raw_loop(brokers, topic, PARTITIONS, args.messages)
        print(f"raw confluent-kafka loop     : {raw:>10,.0f} msgs/s")
        for actors in (1, 2, 4):
            rate = through_actors(brokers, topic, args.messages, actors, tmp)
            print(
                f"{actors} partition actor(s) on 4 : {rate:>10,.0f} msgs/s   ratio {rate / raw:.2f}"
            )

        graph = click_counter("bench-view", topic)
        processor = Processor(
            brokers,
            graph,
            {
                "storage_dir": tmp,
                "namespace": "goka-ray-bench",
                "groups": {"bench-view": {"num_cpus": 0.1}},
            },
        )
        processor.start()
        processor.wait_ready(180)
        view = View(brokers, graph.table_topic, codecs.Int(), {"namespace": "goka-ray-bench"})
        view.start().wait_ready(180)
        keys = [f"key-{i % args.keys}" for i in range(args.gets)]
        driver = []
        for k in keys:
            t = time.perf_counter()
            view.get(k)
            driver.append(time.perf_counter() - t)
        task = ray.get(gets_in_task.remote(view, keys))
        for where, samples in (("driver", driver), ("Ray task", task)):
            med, p99 = percentiles(samples)
            print(f"View.get() from {where:<8}: median {med * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms")
        view.stop()
        processor.stop()
    ray.shutdown()


if __name__ == "__main__":
    main()
