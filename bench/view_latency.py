"""View read latency: View.get and View.get_many(1,000 keys), p50/p99, per view mode.

    python -m bench.view_latency [--keys 100000] [--gets 3000] [--many 200] [--batch 1000]

Fills a 4-partition table topic (``<group>-table``, murmur2-partitioned as goka-ray writes it)
with ``--keys`` keys, opens a View of it in each mode of ``MODES`` and, from this process,
times ``--gets`` single ``get`` calls and ``--many`` ``get_many`` calls of ``--batch`` random
keys (after a warm-up), checking every answer. Each mode is compared with its floor, measured in
the same run on the same keys and values: the cheapest read of that design.

  floors   dict in this process     a Python dict lookup + decode
           LevelDB in this process  a plyvel get + decode (Goka's view: a local LevelDB read)
           dict in a Ray actor      one actor call that looks keys up in a dict + decode
  modes    actor-served View        View(...): one call per view actor holding the keys
           in-process View (memory) LocalView(...): a copy of the table in this process, one dict
           in-process View (LevelDB) LocalView(..., storage="leveldb"): LevelDB per partition

A new view mode is one entry in ``MODES``: a name, how to open it, its floor and its target
(the in-process view of issue 14: floor "LevelDB in this process", get p50 <= 50 us).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import plyvel
import ray

from bench.harness import Percentiles, local_ray
from goka_ray import LocalView, View, codecs, table
from goka_ray.kafka.clients import make_producer
from goka_ray.kafka.topics import TopicManager
from goka_ray.tools.local import LocalKafka

NAMESPACE = "goka-ray-bench-view"
PARTITIONS = 4
CODEC = codecs.Int()


class Reader(Protocol):
    def get(self, key: str) -> Any: ...
    def get_many(self, keys: Iterable[str]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Table:
    """The table every reader serves: its topic, where to reach it, and the truth."""

    brokers: str
    topic: str
    values: dict[str, int]
    workdir: str


# -- floors ---------------------------------------------------------------------------------------


class DictReader:
    def __init__(self, t: Table) -> None:
        self._data = {k.encode(): CODEC.encode(v) for k, v in t.values.items()}

    def get(self, key: str) -> Any:
        raw = self._data.get(key.encode())
        return None if raw is None else CODEC.decode(raw)

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        return {k: self.get(k) for k in keys}


class LevelDBReader:
    def __init__(self, t: Table) -> None:
        self._db = plyvel.DB(f"{t.workdir}/floor-leveldb", create_if_missing=True)
        with self._db.write_batch() as batch:
            for k, v in t.values.items():
                batch.put(k.encode(), CODEC.encode(v))

    def get(self, key: str) -> Any:
        raw = self._db.get(key.encode())
        return None if raw is None else CODEC.decode(raw)

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        return {k: self.get(k) for k in keys}

    def close(self) -> None:
        self._db.close()


class DictActor:
    def __init__(self, data: dict[bytes, bytes]) -> None:
        self._data = data

    def get(self, keys: list[bytes]) -> list[bytes | None]:
        return [self._data.get(k) for k in keys]


class ActorReader:
    def __init__(self, t: Table) -> None:
        data = {k.encode(): CODEC.encode(v) for k, v in t.values.items()}
        self._actor = ray.remote(DictActor).options(num_cpus=0.1).remote(data)

    def stop(self) -> None:
        ray.kill(self._actor)

    def get(self, key: str) -> Any:
        return self.get_many([key])[key]

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        keys = list(keys)
        raws = ray.get(self._actor.get.remote([k.encode() for k in keys]), timeout=60)
        return {k: None if r is None else CODEC.decode(r) for k, r in zip(keys, raws, strict=True)}


FLOORS: dict[str, Callable[[Table], Reader]] = {
    "dict in this process": DictReader,
    "LevelDB in this process": LevelDBReader,
    "dict in a Ray actor": ActorReader,
}

# -- view modes -----------------------------------------------------------------------------------


def actor_served_view(t: Table) -> Reader:
    view = View(t.brokers, t.topic, CODEC, {"namespace": NAMESPACE}).start()
    view.wait_for("running", 180)
    return view


def in_process_view(storage: Literal["memory", "leveldb"]) -> Callable[[Table], Reader]:
    def open_view(t: Table) -> Reader:
        view = LocalView(t.brokers, t.topic, CODEC, storage=storage, storage_dir=t.workdir)
        view.start().wait_for("running", 180)
        return view

    return open_view


@dataclass(frozen=True)
class Mode:
    name: str
    open: Callable[[Table], Reader]
    floor: str  # a key of FLOORS
    #: the get p50 (seconds) the mode is meant to reach, if it has such a target
    target_get_p50: float | None = None


MODES = [
    Mode("actor-served View", actor_served_view, "dict in a Ray actor"),
    Mode("in-process View (memory)", in_process_view("memory"), "dict in this process", 50e-6),
    Mode("in-process View (LevelDB)", in_process_view("leveldb"), "LevelDB in this process", 50e-6),
]

# -- measuring ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    get: Percentiles
    many: Percentiles


def measure(reader: Reader, t: Table, gets: int, many: int, batch: int) -> Figures:
    rng = random.Random(3)
    names = list(t.values)
    for key in rng.sample(names, 200):  # warm-up (connections, caches), and the copy is complete
        assert reader.get(key) == t.values[key], key
    singles = []
    for key in (rng.choice(names) for _ in range(gets)):
        started = time.perf_counter()
        value = reader.get(key)
        singles.append(time.perf_counter() - started)
        if value != t.values[key]:
            raise SystemExit(
                f"{type(reader).__name__}.get({key!r}) = {value!r}, not {t.values[key]}"
            )
    batches = []
    for _ in range(many):
        keys = rng.sample(names, batch)
        started = time.perf_counter()
        values = reader.get_many(keys)
        batches.append(time.perf_counter() - started)
        if any(values[k] != t.values[k] for k in keys):
            raise SystemExit(f"{type(reader).__name__}.get_many returned wrong values")
    return Figures(Percentiles.of(singles), Percentiles.of(batches))


def fill_table(brokers: str, topic: str, values: dict[str, int]) -> None:
    with TopicManager(brokers) as topics:
        topics.ensure_table(topic, PARTITIONS)
    producer = make_producer(brokers, config={"linger.ms": 50, "batch.num.messages": 10000})
    for key, value in values.items():
        while True:
            try:
                producer.produce(topic, key=key.encode(), value=CODEC.encode(value))
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120):
        raise SystemExit("the broker did not acknowledge every table record")


def close(reader: Reader) -> None:
    """Stop a view (its follower thread or actors) or close a floor's database."""
    for method in ("stop", "close"):
        stop = getattr(reader, method, None)
        if stop is not None:
            stop()
            return


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} us" if seconds < 1e-3 else f"{seconds * 1e3:,.2f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--keys", type=int, default=100_000, help="keys in the table")
    ap.add_argument("--gets", type=int, default=3000, help="timed get calls per reader")
    ap.add_argument("--many", type=int, default=200, help="timed get_many calls per reader")
    ap.add_argument("--batch", type=int, default=1000, help="keys per get_many call")
    args = ap.parse_args()
    rng = random.Random(5)
    values = {f"user-{i:07d}": rng.randrange(1, 1 << 40) for i in range(args.keys)}
    results: dict[str, Figures] = {}
    with (
        LocalKafka() as kafka,
        tempfile.TemporaryDirectory(prefix="bench-view-") as workdir,
        local_ray(NAMESPACE),
    ):
        t = Table(kafka.bootstrap_servers, table("bench-view"), values, workdir)
        fill_table(t.brokers, t.topic, values)
        # one reader at a time: each is stopped (its threads, actors) before the next opens
        openers = [*FLOORS.items(), *((m.name, m.open) for m in MODES)]
        for name, open_reader in openers:
            print(f"{name} ...", flush=True)
            reader = open_reader(t)
            try:
                results[name] = measure(reader, t, args.gets, args.many, args.batch)
            finally:
                close(reader)
    print(
        f"\n{args.keys:,} keys; {args.gets:,} get calls and {args.many:,} get_many calls of "
        f"{args.batch:,} keys per reader, from one thread of the driver\n"
    )
    print(
        f"{'reader':<28} {'get p50':>10} {'get p99':>10} {'get_many p50':>13} {'get_many p99':>13}"
    )
    for name, f in results.items():
        print(
            f"{name:<28} {us(f.get.p50):>10} {us(f.get.p99):>10} "
            f"{us(f.many.p50):>13} {us(f.many.p99):>13}"
        )
    print()
    for mode in MODES:
        f, base = results[mode.name], results[mode.floor]
        print(
            f"{mode.name} / {mode.floor}: get p50 {f.get.p50 / base.get.p50:.2f}x, "
            f"p99 {f.get.p99 / base.get.p99:.2f}x; get_many p50 {f.many.p50 / base.many.p50:.2f}x, "
            f"p99 {f.many.p99 / base.many.p99:.2f}x"
        )
        if mode.target_get_p50 is not None:
            met = "met" if f.get.p50 <= mode.target_get_p50 else "NOT met"
            print(f"  target get p50 <= {us(mode.target_get_p50)}: {us(f.get.p50)}, {met}")


if __name__ == "__main__":
    main()
