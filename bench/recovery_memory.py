"""Memory of recovery: peak RSS of a process rebuilding a big table vs steady-state RSS of a
process that holds that table open and processes.

    python -m bench.recovery_memory [--keys 1000000] [--messages 300000]

Starts the local broker and fills a one-partition changelog with ``--keys`` keys, and the
group's input with ``--messages`` clicks over those keys. Then, each in a subprocess of its
own (so their peaks do not mix):
  (a) recover: a PartitionRunner rebuilds the table from the changelog into an empty
      directory; reports its peak RSS (VmHWM) and keys/s;
  (b) steady: a PartitionRunner opens the recovered table (nothing to replay) and processes
      every click; RSS is sampled while it processes, the median of the second half of the
      samples is its steady state.
Prints both and the ratio peak(recover) / steady (target: at most 2).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from tqdm import tqdm

from bench.harness import fill
from goka_ray import Context, GroupGraph, Input, Persist, codecs, define_group
from goka_ray.kafka.runner import PartitionRunner
from goka_ray.kafka.topics import TopicManager
from goka_ray.tools.local import LocalKafka


def count(ctx: Context, msg: bytes) -> None:
    ctx.set_value((ctx.value() or 0) + 1)


def graph_for(group: str) -> GroupGraph:
    return define_group(group, Input(f"{group}-in", codecs.Bytes(), count), Persist(codecs.Int()))


def memory_kb() -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of this process, in kB."""
    out = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(value.split()[0])
    return out


def say(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def child_recover(brokers: str, group: str, storage_dir: str) -> None:
    runner = PartitionRunner(brokers, graph_for(group), 0, storage_dir=storage_dir)
    stop = threading.Event()

    def progress() -> None:
        while not stop.wait(0.5):
            say(progress=runner.status().recovered, **memory_kb())

    threading.Thread(target=progress, daemon=True).start()
    started = time.perf_counter()
    recovered = runner.recover()
    elapsed = time.perf_counter() - started
    stop.set()
    keys = runner.status().keys
    runner.close()
    say(done=True, recovered=recovered, keys=keys, seconds=elapsed, **memory_kb())


def child_steady(brokers: str, group: str, storage_dir: str, messages: int) -> None:
    runner = PartitionRunner(brokers, graph_for(group), 0, storage_dir=storage_dir)
    replayed = runner.recover()
    runner.start_processing()
    samples: list[int] = []
    done = 0
    last = 0.0
    started = time.perf_counter()
    while done < messages:
        done += runner.run_once()
        now = time.monotonic()
        if now - last > 0.25:
            last = now
            rss = memory_kb()["VmRSS"]
            samples.append(rss)
            say(progress=done, VmRSS=rss)
    elapsed = time.perf_counter() - started
    keys = runner.status().keys
    runner.close()
    say(
        done=True,
        replayed=replayed,
        keys=keys,
        processed=done,
        seconds=elapsed,
        # after the warm-up: the median of the second half of the samples
        steady=int(statistics.median(samples[len(samples) // 2 :])) if samples else 0,
        **memory_kb(),
    )


def run_child(
    mode: str, brokers: str, group: str, storage_dir: str, total: int, *extra: str
) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.recovery_memory", "--child", mode, brokers, group]
    command += [storage_dir, *extra]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    bar = tqdm(total=total, desc=mode, unit="key" if mode == "recover" else "msg", unit_scale=True)
    result: dict[str, Any] = {}
    for line in child.stdout:
        event = json.loads(line)
        if event.get("done"):
            result = event
            bar.n = total
        else:
            bar.n = event["progress"]
            bar.set_postfix(rss=f"{event['VmRSS'] / 1024:.0f}MB")
        bar.refresh()
    bar.close()
    if child.wait() != 0 or not result:
        raise SystemExit(f"the {mode} process failed")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--messages", type=int, default=300_000)
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        mode, brokers, group, storage_dir, *rest = args.child
        if mode == "recover":
            child_recover(brokers, group, storage_dir)
        else:
            child_steady(brokers, group, storage_dir, int(rest[0]))
        return

    with LocalKafka() as kafka, tempfile.TemporaryDirectory() as tmp:
        brokers = kafka.bootstrap_servers
        group = f"bench-mem-{time.monotonic_ns()}"
        graph = graph_for(group)
        with TopicManager(brokers) as topics:
            topics.ensure_stream(f"{group}-in", 1)
            topics.ensure_group_topics(graph)
        fill(brokers, graph.table_topic, args.keys, args.keys, codecs.Int().encode(1), "changelog")
        fill(brokers, f"{group}-in", args.messages, args.keys, b"x" * 100, "input")

        rec = run_child("recover", brokers, group, tmp, args.keys)
        assert rec["recovered"] == args.keys and rec["keys"] == args.keys, rec
        steady = run_child("steady", brokers, group, tmp, args.messages, str(args.messages))
        assert steady["replayed"] == 0, steady

        peak, base = rec["VmHWM"] / 1024, steady["steady"] / 1024
        print(
            f"recovery     : {args.keys:,} keys in {rec['seconds']:.1f}s = "
            f"{args.keys / rec['seconds']:,.0f} keys/s, peak RSS {peak:,.0f} MB"
        )
        print(
            f"steady state : {steady['processed']:,} msgs in {steady['seconds']:.1f}s "
            f"({steady['processed'] / steady['seconds']:,.0f} msgs/s), RSS {base:,.0f} MB "
            f"(median after warm-up; peak {steady['VmHWM'] / 1024:,.0f} MB)"
        )
        print(f"peak(recovery) / steady = {peak / base:.2f}  (target <= 2)")


if __name__ == "__main__":
    main()
