"""Failover time of a partition with a large table, with and without a hot standby.

    python -m bench.failover [--keys 1000000]

In one run, for standby_replicas 0 (the baseline) and 1: a one-partition group whose table
holds ``--keys`` keys (its changelog is pre-filled), started on Ray; once it runs (and its
standby has caught up), the owner is killed and its local LevelDB copy deleted, as when its
node is lost. Measured: seconds from the kill until the partition processes again, and how many
changelog records the new owner had to read. Prints both and the ratio.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time

import ray
from confluent_kafka import Producer
from tqdm import tqdm

from goka_ray import Processor, codecs
from goka_ray.core.storage import node_storage_dir, partition_dir
from goka_ray.examples import click_counter
from goka_ray.kafka.topics import TopicManager
from goka_ray.tools.local import LocalKafka

NAMESPACE = "goka-ray-bench-failover"


def fill_changelog(brokers: str, topic: str, keys: int) -> None:
    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 50, "batch.size": 1 << 20})
    value = codecs.Int().encode(1)
    for i in tqdm(range(keys), desc="fill changelog", unit="rec", unit_scale=True):
        while True:
            try:
                producer.produce(topic, key=b"user-%08d" % i, value=value, partition=0)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(120) == 0


def standby_keys(group: str) -> int:
    """Keys held by the group's standby copies (0 when there is none yet)."""
    prefix = f"goka-ray/{group}/standby-"
    total = 0
    for name in ray.util.list_named_actors():
        if name.startswith(prefix):
            statuses = ray.get(ray.get_actor(name, namespace=NAMESPACE).status.remote())
            total += sum(s.keys for s in statuses if s.state == "standby")
    return total


def failover(brokers: str, keys: int, standbys: int, storage: str) -> tuple[float, int]:
    group = f"bench-failover-{standbys}-{time.monotonic_ns()}"
    topic = f"{group}-clicks"
    graph = click_counter(group, topic)
    with TopicManager(brokers) as topics:
        topics.ensure_stream(topic, 1)
        topics.ensure_table(graph.table_topic, 1)
    fill_changelog(brokers, graph.table_topic, keys)
    processor = Processor(
        brokers,
        graph,
        {
            "storage_dir": storage,
            "namespace": NAMESPACE,
            "groups": {group: {"num_cpus": 0.1, "standby_replicas": standbys}},
        },
    )
    processor.start()
    with tqdm(total=keys, desc=f"recover (standby_replicas={standbys})", unit="key") as bar:
        while True:
            status = processor.status()
            part = status.partitions[0]
            bar.update(part.keys - bar.n)
            if status.ready and part.keys == keys and (not standbys or standby_keys(group) == keys):
                break
            time.sleep(0.2)
    before = processor.status().partitions[0]
    node_dir = node_storage_dir(storage, before.node_id or "")
    shutil.rmtree(partition_dir(node_dir, group, graph.table_topic, 0))  # the node is lost
    killed = time.perf_counter()
    ray.kill(ray.get_actor(before.actor_name, namespace=NAMESPACE), no_restart=True)
    while True:
        part = processor.status().partitions[0]
        if part.restarts and part.state == "running" and part.actor_name != before.actor_name:
            break
        time.sleep(0.05)
    seconds = time.perf_counter() - killed
    assert part.keys == keys, (part.keys, keys)
    processor.stop()
    return seconds, part.recovered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    args = parser.parse_args()
    with LocalKafka() as kafka, tempfile.TemporaryDirectory(prefix="grfo", dir="/tmp") as d:
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            namespace=NAMESPACE,
            log_to_driver=False,
        )
        try:
            results = {n: failover(kafka.bootstrap_servers, args.keys, n, d) for n in (0, 1)}
        finally:
            ray.shutdown()
    print(f"\nfailover of a {args.keys:,}-key partition (owner killed, its local copy lost):")
    for n, (seconds, recovered) in results.items():
        label = "with a standby   " if n else "without standby  "
        print(
            f"  {label} {seconds:7.2f} s   changelog records read by the new owner: {recovered:,}"
        )
    print(f"  ratio (with / without): {results[1][0] / results[0][0]:.3f}")


if __name__ == "__main__":
    main()
