"""End-to-end latency, emit -> forwarder -> reader: goka-ray against a raw confluent-kafka loop.

    python -m bench.latency [--seconds 20] [--warmup 4] [--rate 2000] [--tick 0.05]
                            [--partitions 4] [--low-fetch-wait-ms 10]

Each run has three processes, and the emit time travels in the payload:
  producer   sends ticks of ``rate * tick`` messages every ``tick`` seconds (default 100
             every 50 ms = 2,000 msgs/s); ticks keep the local broker's fetch cost flat (its
             cost grows with the number of record batches in a partition);
  forwarder  (a) raw: one confluent-kafka consumer -> producer loop in a process of its own:
             take what is buffered, block only when nothing is, count per key, produce every
             message to the output, wait for the acks, commit; or (b) goka-ray: a group on a
             local Ray (default group config: one partition actor per partition) whose
             callback counts per key in its table and emits every message to the output;
  reader     reads the output and records, per message, its arrival time minus its emit time.
Every client uses goka-ray's settings (``make_consumer`` / ``make_producer``) plus the run's
fetch settings, so the two forwarders differ only in what runs between consume and produce.
Messages emitted in the first ``--warmup`` seconds are not measured.

Runs at the librdkafka default fetch settings (``fetch.wait.max.ms`` 500) and at a low
``fetch.wait.max.ms``. Prints p50/p99/max per forwarder, the ratio goka-ray / raw, and the CPU
the broker, the forwarder and the whole machine used during each run (the local broker answers
a fetch only when its wait expires, so a lower wait costs it CPU).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from bench.harness import CpuMeter, Percentiles, broker_process, local_ray
from goka_ray import Context, Input, Output, Persist, Processor, codecs, define_group
from goka_ray.kafka.clients import make_consumer, make_producer
from goka_ray.kafka.topics import TopicManager
from goka_ray.tools.local import LocalKafka

NAMESPACE = "goka-ray-bench-latency"
#: payload head: emit time (ns since the epoch, this machine's clock) and sequence number
HEAD = struct.Struct("!qq")
PAYLOAD = 100  # bytes per message
KEYS = 1000


# -- the three roles, each run as `python -m bench.latency <role> '<json args>'` -----------------


def producer_role(brokers: str, topic: str, rate: int, tick: float, seconds: float) -> None:
    producer = make_producer(brokers)
    per_tick = max(1, round(rate * tick))
    ticks = round(seconds / tick)
    rng = random.Random(7)
    keys = [f"user-{i}".encode() for i in range(KEYS)]
    pad = b"x" * (PAYLOAD - HEAD.size)
    seq = late = 0
    due = time.perf_counter()
    for _ in range(ticks):
        for _ in range(per_tick):
            producer.produce(
                topic, key=rng.choice(keys), value=HEAD.pack(time.time_ns(), seq) + pad
            )
            seq += 1
        producer.poll(0)
        due += tick
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        else:
            late += 1
    if producer.flush(60):
        raise SystemExit("producer: messages left unacknowledged")
    print(json.dumps({"sent": seq, "late_ticks": late}), flush=True)


def forwarder_role(brokers: str, source: str, sink: str, partitions: int, consumer: dict) -> None:
    """The raw baseline: what a hand-written at-least-once forwarder does."""
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    cons = make_consumer(brokers, f"bench-raw-forwarder-{time.time_ns()}", config=consumer)
    cons.assign([TopicPartition(source, p, OFFSET_BEGINNING) for p in range(partitions)])
    prod = make_producer(brokers)
    counts: Counter[bytes] = Counter()
    print(json.dumps({"ready": True}), flush=True)
    while not stopping:
        first = cons.poll(0.1)  # blocks only while nothing is buffered
        if first is None:
            continue
        batch = [first, *cons.consume(4999, timeout=0)]  # and takes what is buffered
        for m in batch:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    raise SystemExit(f"forwarder: {err}")
                continue
            key = m.key()
            assert key is not None
            counts[key] += 1
            prod.produce(sink, key=key, value=m.value())
        if prod.flush(60):
            raise SystemExit("forwarder: messages left unacknowledged")
        cons.commit(asynchronous=True)
    cons.close()


def reader_role(
    brokers: str,
    topic: str,
    partitions: int,
    consumer: dict,
    expect: int,
    skip: int,
    timeout: float,
) -> None:
    cons = make_consumer(brokers, f"bench-reader-{time.time_ns()}", config=consumer)
    cons.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    seen = bytearray(expect)
    latencies: list[float] = []
    received = duplicates = 0
    print(json.dumps({"ready": True}), flush=True)
    deadline = time.monotonic() + timeout
    while received < expect and time.monotonic() < deadline:
        first = cons.poll(0.1)
        if first is None:
            continue
        batch = [first, *cons.consume(10000, timeout=0)]
        now = time.time_ns()
        for m in batch:
            if m.error() is not None:
                continue
            value = m.value()
            assert value is not None
            emitted, seq = HEAD.unpack_from(value)
            if seen[seq]:
                duplicates += 1
                continue
            seen[seq] = 1
            received += 1
            if seq >= skip:
                latencies.append((now - emitted) / 1e9)
    cons.close()
    p = Percentiles.of(latencies) if latencies else None
    print(
        json.dumps(
            {
                "received": received,
                "duplicates": duplicates,
                "measured": len(latencies),
                "p50": p and p.p50,
                "p99": p and p.p99,
                "max": p and p.max,
            }
        ),
        flush=True,
    )


ROLES = {"produce": producer_role, "forward": forwarder_role, "read": reader_role}


def spawn(role: str, **kwargs: Any) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "bench.latency", role, json.dumps(kwargs)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def await_line(process: subprocess.Popen[str], what: str) -> dict[str, Any]:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise SystemExit(f"the {what} process ended without answering (exit {process.wait()})")
    answer: dict[str, Any] = json.loads(line)
    return answer


# -- the driver ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    forwarder: str
    fetch: str
    p50: float
    p99: float
    max: float
    measured: int
    received: int
    sent: int
    duplicates: int
    cpu: dict[str, float]


def goka_forwarder(brokers: str, group: str, sink: str, consumer: dict, storage: str) -> Processor:
    def count_and_forward(ctx: Context, msg: bytes) -> None:
        ctx.set_value((ctx.value() or 0) + 1)
        ctx.emit(sink, ctx.key, msg)

    graph = define_group(
        group,
        Input(f"{group}-in", codecs.Bytes(), count_and_forward),
        Output(sink, codecs.Bytes()),
        Persist(codecs.Int()),
    )
    processor = Processor(
        brokers,
        graph,
        {"storage_dir": storage, "namespace": NAMESPACE, "kafka": {"consumer": consumer}},
    )
    processor.start()
    processor.wait_ready(180)
    return processor


def run_once(
    args: argparse.Namespace,
    broker_pid: int,
    forwarder: str,
    fetch: str,
    consumer: dict,
    storage: str,
) -> Result:
    brokers = args.brokers
    name = re.sub(r"[^a-zA-Z0-9._-]", "", f"bench-lat-{forwarder}-{fetch}-{time.monotonic_ns()}")
    source, sink = f"{name}-in", f"{name}-out"
    with TopicManager(brokers) as topics:
        topics.ensure_stream(source, args.partitions)
        topics.ensure_stream(sink, args.partitions)
    per_tick = max(1, round(args.rate * args.tick))
    sent_total = per_tick * round((args.warmup + args.seconds) / args.tick)
    skip = per_tick * round(args.warmup / args.tick)

    processor = raw = None
    if forwarder == "goka-ray":
        processor = goka_forwarder(brokers, name, sink, consumer, storage)
        forwarder_pids = [p.pid for p in processor.status().partitions if p.pid]
    else:
        raw = spawn(
            "forward",
            brokers=brokers,
            source=source,
            sink=sink,
            partitions=args.partitions,
            consumer=consumer,
        )
        await_line(raw, "forwarder")
        forwarder_pids = [raw.pid]
    reader = spawn(
        "read",
        brokers=brokers,
        topic=sink,
        partitions=args.partitions,
        consumer=consumer,
        expect=sent_total,
        skip=skip,
        timeout=args.warmup + args.seconds + 60,
    )
    await_line(reader, "reader")
    producer = spawn(
        "produce",
        brokers=brokers,
        topic=source,
        rate=args.rate,
        tick=args.tick,
        seconds=args.warmup + args.seconds,
    )
    time.sleep(args.warmup)
    meter = CpuMeter({"broker": broker_pid, "forwarder": forwarder_pids})
    sent = await_line(producer, "producer")
    cpu = meter.stop()
    read = await_line(reader, "reader")
    for process in (producer, reader):
        process.wait(30)
    if raw is not None:
        raw.terminate()
        raw.wait(30)
    if processor is not None:
        processor.stop()
    if read["p50"] is None:
        raise SystemExit(f"{forwarder} ({fetch}): the reader measured nothing: {read}")
    return Result(
        forwarder,
        fetch,
        read["p50"],
        read["p99"],
        read["max"],
        read["measured"],
        read["received"],
        sent["sent"],
        read["duplicates"],
        cpu,
    )


def report(results: list[Result], target: float) -> None:
    print()
    print(
        f"{'fetch settings':<26} {'forwarder':<9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'received':>15} {'dup':>4} {'broker CPU':>10} {'fwd CPU':>8} {'machine':>8}"
    )
    for r in results:
        print(
            f"{r.fetch:<26} {r.forwarder:<9} {r.p50 * 1e3:>8.1f} {r.p99 * 1e3:>8.1f} "
            f"{r.max * 1e3:>8.1f} {f'{r.received:,}/{r.sent:,}':>15} {r.duplicates:>4} "
            f"{r.cpu['broker']:>10.0%} {r.cpu['forwarder']:>8.0%} {r.cpu['machine']:>8.0%}"
        )
    print()
    for fetch in dict.fromkeys(r.fetch for r in results):
        raw = next(r for r in results if r.fetch == fetch and r.forwarder == "raw")
        goka = next(r for r in results if r.fetch == fetch and r.forwarder == "goka-ray")
        print(
            f"{fetch:<26} goka-ray / raw: p50 {goka.p50 / raw.p50:.2f}x, "
            f"p99 {goka.p99 / raw.p99:.2f}x (target <= {target}), max {goka.max / raw.max:.2f}x"
        )
    lost = [r for r in results if r.received < r.sent]
    for r in lost:
        print(f"LOST: {r.forwarder} ({r.fetch}) delivered {r.received:,} of {r.sent:,}")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] in ROLES:
        ROLES[sys.argv[1]](**json.loads(sys.argv[2]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=4.0, help="unmeasured seconds first")
    ap.add_argument("--rate", type=int, default=2000, help="messages per second")
    ap.add_argument("--tick", type=float, default=0.05, help="seconds between producer ticks")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--low-fetch-wait-ms", type=int, default=10)
    args = ap.parse_args()
    settings = {
        "default fetch settings": {},
        f"fetch.wait.max.ms={args.low_fetch_wait_ms}": {
            "fetch.wait.max.ms": args.low_fetch_wait_ms
        },
    }
    results = []
    with (
        LocalKafka() as kafka,
        tempfile.TemporaryDirectory(prefix="bench-lat-") as storage,
        local_ray(NAMESPACE),
    ):
        args.brokers = kafka.bootstrap_servers
        broker_pid = broker_process(kafka)
        for fetch, consumer in settings.items():
            for forwarder in ("raw", "goka-ray"):
                print(f"{fetch}: {forwarder} forwarder, {args.warmup + args.seconds:g} s ...")
                results.append(run_once(args, broker_pid, forwarder, fetch, consumer, storage))
    report(results, target=1.5)


if __name__ == "__main__":
    main()
