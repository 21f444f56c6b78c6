"""Helpers for tests that run processor groups against the local broker."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from goka_ray import Context, GroupGraph, Input, Persist, codecs, define_group
from goka_ray.core.storage import LevelDBStorage, partition_dir
from goka_ray.kafka.clients import make_consumer, make_producer
from goka_ray.kafka.runner import PartitionRunner, RunnerConfig, RunnerState


def count_click(ctx: Context, msg: str) -> None:
    ctx.set_value((ctx.value() or 0) + 1)


def clicks_graph(group: str, topic: str) -> GroupGraph:
    return define_group(group, Input(topic, codecs.String(), count_click), Persist(codecs.Int()))


def produce(brokers: str, topic: str, items: Iterable[tuple[str, bytes | None]]) -> dict[int, int]:
    """Produce keyed messages (murmur2); returns the end offset reached per partition."""
    producer = make_producer(brokers)
    ends: dict[int, int] = {}
    errors: list[object] = []

    def delivered(err: object, msg: object) -> None:
        if err is not None:
            errors.append(err)
        else:
            p = msg.partition()  # type: ignore[attr-defined]
            ends[p] = max(ends.get(p, 0), msg.offset() + 1)  # type: ignore[attr-defined]

    for key, value in items:
        while True:
            try:
                producer.produce(topic, key=key.encode(), value=value, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert not errors, errors
    return ends


def produce_clicks(
    brokers: str, topic: str, n: int, users: int, seed: int = 1
) -> tuple[Counter[str], dict[int, int]]:
    rng = random.Random(seed)
    keys = [f"user-{rng.randrange(users)}" for _ in range(n)]
    return Counter(keys), produce(brokers, topic, ((k, b"click") for k in keys))


Record = tuple[int, int, bytes | None, bytes | None, dict[str, bytes]]


def read_records(brokers: str, topic: str, partitions: int) -> list[Record]:
    """Every record of a topic as (partition, offset, key, value, headers), read to the end by
    a read_committed consumer (librdkafka's default isolation)."""
    consumer = make_consumer(brokers, f"reader-{time.monotonic_ns()}")
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out: list[Record] = []
    remaining = set(range(partitions))
    deadline = time.monotonic() + 60
    while remaining and time.monotonic() < deadline:
        for m in consumer.consume(10000, timeout=0.5):
            if m.error() is not None:
                if m.error().code() == KafkaError._PARTITION_EOF:
                    remaining.discard(m.partition())
                continue
            headers = dict(m.headers() or [])
            out.append((m.partition(), m.offset(), m.key(), m.value(), headers))
    consumer.close()
    assert not remaining, f"did not reach the end of {topic} partitions {remaining}"
    return out


def read_topic(
    brokers: str, topic: str, partitions: int
) -> list[tuple[int, int, bytes | None, bytes | None]]:
    """Every record of a topic as (partition, offset, key, value), read to the end."""
    return [(p, o, k, v) for p, o, k, v, _ in read_records(brokers, topic, partitions)]


def table_contents(storage_dir: Path, group: str, table: str, partitions: int) -> dict[str, int]:
    """The Int table a group's runners left in LevelDB, all partitions merged."""
    ints = codecs.Int()
    out: dict[str, int] = {}
    for p in range(partitions):
        storage = LevelDBStorage(partition_dir(storage_dir, group, table, p))
        out.update({k.decode(): ints.decode(v) for k, v in storage.iterate()})
        storage.close()
    return out


def latest_values(
    records: Iterable[tuple[int, int, bytes | None, bytes | None]],
) -> dict[bytes, bytes]:
    """What a compacted topic converges to: the last value per key, tombstones removing it."""
    latest: dict[bytes, bytes | None] = {}
    for _, _, key, value in sorted(records, key=lambda r: (r[0], r[1])):
        assert key is not None
        latest[key] = value
    return {k: v for k, v in latest.items() if v is not None}


def wait_until(cond: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Running:
    """Runners in threads, stopped and joined on exit."""

    def __init__(self, runners: list[PartitionRunner]) -> None:
        self.runners = runners
        self.threads: list[threading.Thread] = []

    def __enter__(self) -> Running:
        for r in self.runners:
            t = threading.Thread(target=_run, args=(r,), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def wait_for_offsets(self, topic: str, ends: dict[int, int], timeout: float = 90) -> None:
        def done() -> bool:
            for r in self.runners:
                assert r.state != RunnerState.FAILED, r.error
            by_partition = {r.partition: r.status().offsets.get(topic, 0) for r in self.runners}
            return all(by_partition.get(p, 0) >= end for p, end in ends.items())

        wait_until(done, timeout, f"{topic} consumed to {ends}")

    def __exit__(self, *exc: object) -> None:
        for r in self.runners:
            r.stop()
        for t in self.threads:
            t.join(60)
            assert not t.is_alive(), "runner thread did not stop"


def _run(runner: PartitionRunner) -> None:
    try:
        runner.run()
    except BaseException:
        pass  # kept in runner.error


def runners_for(
    brokers: str,
    graph: GroupGraph,
    partitions: Iterable[int],
    storage_dir: Path,
    config: RunnerConfig | None = None,
) -> list[PartitionRunner]:
    return [
        PartitionRunner(brokers, graph, p, storage_dir=storage_dir, config=config)
        for p in partitions
    ]


class ClickStream:
    """Emits batches of clicks in a background thread; ``truth`` counts what was sent."""

    def __init__(self, brokers: str, topic: str, batch: int, users: int, seed: int = 0) -> None:
        self.brokers, self.topic, self.batch, self.users, self.seed = (
            brokers,
            topic,
            batch,
            users,
            seed,
        )
        self.truth: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._emit, daemon=True)

    def _emit(self) -> None:
        i = 0
        while not self._stop.is_set():
            sent, _ = produce_clicks(
                self.brokers, self.topic, self.batch, self.users, self.seed + i
            )
            self.truth.update(sent)
            i += 1
            time.sleep(0.05)

    def __enter__(self) -> ClickStream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)
