"""Node loss: seconds from losing a node until its partitions process again, on several nodes.

    python -m bench.node_loss [--runs 3]

On Ray's multi-node test cluster (a head node that hosts no partition actor and three worker
nodes, each a raylet of its own; Ray's GCS health checks every second, a node dead after 3
failed ones, as ``ray-cluster.yaml`` sets them), a group of 4 partitions on 2 actors counts
clicks that flow all the time. The node that holds partition 0's owner is killed
(``remove_node`` without a graceful shutdown: a lost machine), in three cases per run:

- ``no standby``: the baseline; the lost partitions go to a new actor that recovers them
- ``standby``: ``standby_replicas: 1``; standbys on other nodes are promoted
- ``standby, coordinator lost``: the group's coordinator ran on that node too
  (``coordinator_node``); Ray starts it again on another node, which adopts what is left

Measured: seconds from the kill until every partition of the lost node runs under a new
owner and has processed clicks sent after the kill. Prints each run, then per case the median
and the worst, and the ratio of the medians to the baseline's (the targets: 5 s with a
standby, 10 s when the coordinator was lost too), and how busy the machine was. Every run also
checks the counts (at least the clicks sent) and that the group is back on 2 actors.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from typing import Any

import ray
from ray.cluster_utils import Cluster

from bench.harness import CpuMeter
from goka_ray import Processor, View, codecs
from goka_ray.examples import click_counter
from goka_ray.kafka.clients import make_producer
from goka_ray.kafka.topics import TopicManager
from goka_ray.tools.local import LocalKafka

NAMESPACE = "goka-ray-bench-node-loss"
PARTITIONS = 4
#: Ray GCS health checks as ray-cluster.yaml sets them: a lost node is dead after about 3 s
HEALTH_CHECKS = {
    "health_check_initial_delay_ms": 1000,
    "health_check_period_ms": 1000,
    "health_check_timeout_ms": 1000,
    "health_check_failure_threshold": 3,
}
CASES = ("no standby", "standby", "standby, coordinator lost")
VERBOSE = False


class Clicks:
    """Clicks produced all the time from a thread (a few hundred per second); ``truth``."""

    def __init__(self, brokers: str, topic: str) -> None:
        self.producer = make_producer(brokers)
        self.topic = topic
        self.truth: Counter[str] = Counter()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        i = 0
        while not self.stopped.is_set():
            for _ in range(20):
                user = f"user-{i % 500}"
                self.producer.produce(self.topic, key=user.encode(), value=b"click")
                self.truth[user] += 1
                i += 1
            self.producer.poll(0)
            time.sleep(0.05)

    def stop(self) -> Counter[str]:
        self.stopped.set()
        self.thread.join()
        if self.producer.flush(30):
            raise RuntimeError("clicks were not all delivered")
        return self.truth


def status_or_none(processor: Processor) -> Any:
    try:
        return processor.status()
    except Exception:  # the coordinator is being started again
        return None


def wait(what: str, cond: Any, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"{what} after {timeout}s")


def one_run(cluster: Cluster, brokers: str, storage: str, case: str) -> float:
    group = f"bench-node-loss-{uuid.uuid4().hex[:8]}"
    topic = f"{group}-clicks"
    graph = click_counter(group, topic)
    with TopicManager(brokers) as topics:
        topics.ensure_stream(topic, PARTITIONS)
    workers = sorted(n.node_id for n in cluster.worker_nodes)
    settings: dict[str, Any] = {"actors": 2, "num_cpus": 0.25}
    settings["standby_replicas"] = 0 if case == "no standby" else 1
    if case.endswith("coordinator lost"):
        settings["coordinator_node"] = workers[0]  # where spread puts partitions 0 and 1
    processor = Processor(
        brokers,
        graph,
        {"storage_dir": storage, "namespace": NAMESPACE, "groups": {group: settings}},
    )
    processor.start()
    clicks = Clicks(brokers, topic)
    try:
        processor.wait_ready(120)

        def placed() -> Any:
            st = processor.status()
            want = settings["standby_replicas"]
            return st if all(len(p.standby_nodes) == want for p in st.partitions) else None

        before = wait("standbys placed", placed)
        lost = before.partitions[0].node_id
        if case.endswith("coordinator lost") and lost != workers[0]:
            raise RuntimeError(f"partition 0 runs on {lost}, not on the coordinator's node")
        held = [p.partition for p in before.partitions if p.node_id == lost]
        node = next(n for n in cluster.worker_nodes if n.node_id == lost)
        sent_at = {p: clicks_end(brokers, topic, p) for p in held}
        killed = time.perf_counter()
        print(f"{time.strftime('%H:%M:%S')} {case}: node {lost[:8]} lost", file=sys.stderr)
        cluster.remove_node(node, allow_graceful=False)

        seen: dict[int, tuple[str, str | None]] = {}

        def processing() -> bool:
            st = status_or_none(processor)
            if st is None:
                return False
            parts = [st.partitions[p] for p in held]
            if VERBOSE:
                for p in parts:
                    now = (p.state, p.actor_name)
                    if seen.get(p.partition) != now:
                        seen[p.partition] = now
                        print(
                            f"  {time.perf_counter() - killed:5.2f} s partition {p.partition}: "
                            f"{p.state} on {(p.actor_name or '-').rsplit('/', 1)[-1]}",
                            file=sys.stderr,
                        )
            return all(
                p.state == "running"
                and p.node_id != lost
                and p.offsets.get(topic, 0) > sent_at[p.partition]
                for p in parts
            )

        wait("the lost partitions to process again", processing)
        seconds = time.perf_counter() - killed
        truth = clicks.stop()
        wait(
            "the group back on 2 actors",
            lambda: (
                (s := status_or_none(processor))
                and s.ready
                and s.actors == 2
                and s.state == "running"
            ),
        )
        view = View(brokers, graph.table_topic, codecs.Int(), {"namespace": NAMESPACE}).start()
        view.wait_ready(60)

        def counted() -> bool:
            got = view.get_many(list(truth))
            return all((got.get(u) or 0) >= n for u, n in truth.items())

        wait("the counts to reach the clicks sent", counted)
        view.stop()
        return seconds
    finally:
        if not clicks.stopped.is_set():
            clicks.stop()
        try:
            processor.stop()
        except Exception as exc:
            print(f"stopping {group}: {exc}", file=sys.stderr)
        cluster.add_node(num_cpus=2, object_store_memory=100 * 1024 * 1024)


def clicks_end(brokers: str, topic: str, partition: int) -> int:
    from confluent_kafka import TopicPartition

    from goka_ray.kafka.clients import make_consumer

    consumer = make_consumer(brokers, f"bench-{uuid.uuid4().hex[:8]}")
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        return int(high)
    finally:
        consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cases", nargs="*", choices=CASES, default=list(CASES))
    parser.add_argument("-v", "--verbose", action="store_true", help="state changes on stderr")
    args = parser.parse_args()
    global VERBOSE
    VERBOSE = args.verbose
    results: dict[str, list[float]] = {case: [] for case in args.cases}
    meter = CpuMeter({})
    with LocalKafka() as kafka, tempfile.TemporaryDirectory(prefix="grnl", dir="/tmp") as d:
        cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 0, "_system_config": HEALTH_CHECKS},
        )
        for _ in range(3):
            cluster.add_node(num_cpus=2, object_store_memory=100 * 1024 * 1024)
        ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
        try:
            for run in range(args.runs):
                for case in args.cases:
                    seconds = one_run(cluster, kafka.bootstrap_servers, d, case)
                    results[case].append(seconds)
                    print(f"run {run + 1}: {case:<27} {seconds:6.2f} s", flush=True)
        finally:
            ray.shutdown()
            cluster.shutdown()
    machine = meter.stop()["machine"]
    base = statistics.median(results.get("no standby") or [float("nan")])
    print(
        f"\nnode loss -> its partitions process again ({args.runs} runs each; machine "
        f"{machine:.0%} busy):"
    )
    for case, times in results.items():
        median = statistics.median(times)
        print(
            f"  {case:<27} median {median:6.2f} s   worst {max(times):6.2f} s   "
            f"ratio to no standby {median / base:.2f}"
        )


if __name__ == "__main__":
    main()
