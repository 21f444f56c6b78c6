"""Counting clicks end to end: goka-ray with 1, 2 and 4 partition actors against a raw
confluent-kafka loop and Quix Streams, on the same pre-filled topic, in one run.

    python -m bench.ray_throughput [--messages 1000000] [--keys 10000] [--actors 1 2 4]
                                   [--quix-python .venv-quix/bin/python | --no-quix]

A 4-partition topic is filled with ``--messages`` clicks (100-byte values) over ``--keys``
users. Each contender counts them per user; the figure is wall time from its start until every
count is there, as msgs/s:
  raw       one confluent-kafka consumer (manual assignment, goka-ray's client settings)
            counting into a dict: no state store, no changelog, nothing committed; from
            creating the consumer until the last message is counted;
  Quix      Quix Streams with its defaults (RocksDB state, changelog topics) counting in its
            state, in a process of its own (``bench.quix_count``, Quix's own venv); from
            creating the Application until its run returned after the final checkpoint;
  goka-ray  the click counter (``goka_ray.examples.click_counter``) as a Processor on a local
            Ray (``num_cpus=2``) with the default group config but ``actors``; from
            ``Processor.start()`` until a View of its table returns every user's count equal
            to the truth (the raw loop's counts).
Prints msgs/s of each and goka-ray's ratios to the raw loop and to Quix Streams, and goka-ray's
ratio to the raw loop after its start-up (from the first processed offsets until every count was
seen: where the rest of the gap lies).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from tqdm import tqdm

from bench.harness import CpuMeter, fill, local_ray
from goka_ray import Processor, View, codecs
from goka_ray.examples import click_counter
from goka_ray.kafka.clients import make_consumer
from goka_ray.tools.local import LocalKafka

PARTITIONS = 4
NAMESPACE = "goka-ray-bench-throughput"
QUIX_PYTHON = ".venv-quix/bin/python"


def create_clicks_topic(brokers: str, topic: str) -> None:
    """A plain stream topic, with Kafka's default retention set explicitly: the local broker
    describes only the configs set at creation, and Quix Streams reads ``retention.ms``."""
    admin = AdminClient({"bootstrap.servers": brokers})
    new = NewTopic(topic, PARTITIONS, 1, config={"retention.ms": "604800000"})
    admin.create_topics([new])[topic].result(30)


def raw_count(brokers: str, topic: str, n: int) -> tuple[float, Counter[bytes]]:
    """Seconds to count ``n`` messages per key with one plain consumer, and the counts."""
    started = time.perf_counter()
    consumer = make_consumer(brokers, f"bench-raw-{time.time_ns()}")
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    counts: Counter[bytes] = Counter()
    seen = 0
    while seen < n:
        for m in consumer.consume(5000, timeout=1.0):
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(err)
                continue
            key = m.key()
            assert key is not None
            counts[key] += 1
            seen += 1
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed, counts


def quix_count(python: str, brokers: str, topic: str, n: int, state_dir: str) -> dict[str, float]:
    command = [python, "-m", "bench.quix_count", brokers, topic, str(n), state_dir]
    out = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True, timeout=1800)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    if result["processed"] != n or result["counted"] != n:
        raise SystemExit(f"Quix Streams did not count every click once: {result}")
    return result


def goka_count(
    brokers: str, topic: str, truth: dict[str, int], actors: int, storage: str
) -> tuple[float, float, float]:
    """Seconds from start until a View shows every count; until every offset was processed; and
    until the status first showed a processed offset (start-up: Ray starts the coordinator, view
    and partition actor processes, the partitions recover, get ``go`` and fetch)."""
    n = sum(truth.values())
    graph = click_counter(f"bench-tp-{actors}-{time.time_ns()}", topic)
    config = {
        "storage_dir": storage,
        "namespace": NAMESPACE,
        "groups": {graph.group: {"actors": actors}},
    }
    started = time.perf_counter()
    processor = Processor(brokers, graph, config)
    processor.start()
    view = View(brokers, graph.table_topic, codecs.Int(), config).start()

    def offsets() -> int:
        return sum(p.offsets.get(topic, 0) for p in processor.status().partitions)

    first: float | None = None
    with tqdm(total=n, desc=f"goka-ray, {actors} actor(s)", unit="msg", unit_scale=True) as bar:
        while (done := offsets()) < n:
            if done and first is None:
                first = time.perf_counter() - started
            bar.update(done - bar.n)
            time.sleep(0.1)
        bar.update(done - bar.n)
    processed = time.perf_counter() - started
    users = list(truth)
    while True:
        seen = view.get_many(users)
        if seen == truth:
            break
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    view.stop()
    processor.stop()
    return elapsed, processed, processed if first is None else first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--actors", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--quix-python", default=QUIX_PYTHON, help="python of Quix Streams' venv")
    ap.add_argument("--no-quix", action="store_true", help="leave Quix Streams out")
    args = ap.parse_args()
    if not args.no_quix and not Path(args.quix_python).exists():
        raise SystemExit(
            f"{args.quix_python} not found: `make bench` creates Quix Streams' venv there "
            f"(or pass --quix-python, or --no-quix)"
        )
    n = args.messages
    with (
        LocalKafka() as kafka,
        tempfile.TemporaryDirectory(prefix="bench-tp-") as tmp,
        local_ray(NAMESPACE),
    ):
        brokers = kafka.bootstrap_servers
        topic = "bench-clicks"
        create_clicks_topic(brokers, topic)
        fill(brokers, topic, n, args.keys, b"x" * 100, "fill clicks")

        rates: dict[str, float] = {}
        busy: dict[str, float] = {}
        #: msgs/s from the first processed offsets until every count was seen (start-up left out)
        after_start: dict[str, float] = {}

        def measured(name: str, seconds: float, meter: CpuMeter) -> None:
            rates[name] = n / seconds
            busy[name] = meter.stop()["machine"]

        print("raw confluent-kafka loop ...", flush=True)
        meter = CpuMeter({})
        raw_seconds, counts = raw_count(brokers, topic, n)
        measured("raw loop, first", raw_seconds, meter)
        truth = {k.decode(): v for k, v in counts.items()}
        if not args.no_quix:
            print("Quix Streams ...", flush=True)
            meter = CpuMeter({})
            quix = quix_count(args.quix_python, brokers, topic, n, f"{tmp}/quix")
            measured("Quix Streams", quix["seconds"], meter)
            print(
                f"  Quix Streams: first message after {quix['first_message']:.1f} s "
                f"(consumer group join), all counted in {quix['seconds']:.1f} s"
            )
        for actors in args.actors:
            meter = CpuMeter({})
            seconds, processed, first = goka_count(brokers, topic, truth, actors, tmp)
            measured(f"goka-ray, {actors} actor(s)", seconds, meter)
            print(
                f"  goka-ray, {actors} actor(s): first offsets processed after {first:.1f} s "
                f"(start-up), every offset after {processed:.1f} s, every count seen through "
                f"the View after {seconds:.1f} s"
            )
            after_start[f"goka-ray, {actors} actor(s)"] = n / max(seconds - first, 1e-9)
        print("raw confluent-kafka loop again ...", flush=True)
        meter = CpuMeter({})
        measured("raw loop, last", raw_count(brokers, topic, n)[0], meter)

    # the raw loop ran first and last: their mean is the baseline, their gap the drift in load
    raw = (rates["raw loop, first"] + rates["raw loop, last"]) / 2
    quix_rate = rates.get("Quix Streams")
    print(
        f"\n{n:,} clicks, {args.keys:,} users, {PARTITIONS} partitions; wall time until every "
        f"count is there (machine: share of both cores busy, all processes, during the run)\n"
    )
    for name, rate in rates.items():
        line = f"{name:<26} {rate:>10,.0f} msgs/s   machine {busy[name]:>4.0%}"
        if name.startswith("goka-ray"):
            line += f"   {rate / raw:.2f} of raw"
            if quix_rate:
                line += f", {rate / quix_rate:.2f}x Quix Streams"
            line += f"; after start-up {after_start[name] / raw:.2f} of raw"
        print(line)
    print(
        f"\nbaseline: raw loop {raw:,.0f} msgs/s (mean of first and last). Default config = "
        f"{PARTITIONS} actors, one per partition; targets >= 0.75 of raw and >= 3.5x Quix Streams"
    )


if __name__ == "__main__":
    main()
