"""Runs the click counter on every partition until killed (used by the SIGKILL test)."""

from __future__ import annotations

import sys
import threading

from kafka_helpers import clicks_graph

from goka_ray.kafka.runner import PartitionRunner, RunnerConfig


def main() -> None:
    brokers, group, topic, partitions, storage_dir = sys.argv[1:6]
    graph = clicks_graph(group, topic)
    config = RunnerConfig(batch_size=100)
    runners = [
        PartitionRunner(brokers, graph, p, storage_dir=storage_dir, config=config)
        for p in range(int(partitions))
    ]
    threads = [threading.Thread(target=r.run, daemon=True) for r in runners]
    for t in threads:
        t.start()
    sys.stdout.write("started\n")
    sys.stdout.flush()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
