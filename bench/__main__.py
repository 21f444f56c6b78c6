"""Run the benchmarks, each in a process of its own, one after another.

    python -m bench                      # all of them, in the order below
    python -m bench latency view_latency # some of them
    python -m bench --list               # what there is

``make bench`` runs all of them (``make bench BENCH="latency"`` some), after installing what
they need: ``bench/requirements.txt`` into goka-ray's venv and Quix Streams into a venv of its
own (``.venv-quix``). Each benchmark starts its own local broker and local Ray, measures its
baseline in the same run and prints its figures and ratios; arguments are each module's
defaults (run ``python -m bench.<name> --help`` to change them). Minutes are on the 2-core
development machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

#: name -> (what it measures against what, about how many minutes it takes)
BENCHMARKS: dict[str, tuple[str, float]] = {
    "core_cpu": ("CPU per message of the partition core vs a plain counting loop", 0.5),
    "throughput": ("partition runner vs raw confluent-kafka loop; recovery keys/s", 1.5),
    "ray_throughput": ("1, 2, 4 partition actors vs raw loop and Quix Streams", 3.5),
    "startup": ("a group's start until running vs Ray starting as many empty actors", 1.5),
    "latency": ("end-to-end p50/p99/max vs a raw forwarder, two fetch settings", 3.0),
    "view_latency": ("View.get / get_many(1,000) per view mode vs its floor", 1.5),
    "eos_throughput": ("exactly-once vs at-least-once", 1.5),
    "recovery_memory": ("peak RSS recovering 1,000,000 keys vs steady state", 1.5),
    "failover": ("failover of a 1,000,000-key partition, with vs without a standby", 2.0),
    "node_loss": (
        "a lost node on a 4-node test cluster: with vs without standby, coordinator",
        7.0,
    ),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "names", nargs="*", help=f"benchmarks to run (default: all): {list(BENCHMARKS)}"
    )
    ap.add_argument("--list", action="store_true", help="list the benchmarks and stop")
    args = ap.parse_args()
    if args.list:
        for name, (what, minutes) in BENCHMARKS.items():
            print(f"{name:<16} ~{minutes:g} min  {what}")
        return
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    failed = []
    timings = {}
    for name in args.names or list(BENCHMARKS):
        what, minutes = BENCHMARKS[name]
        print(f"\n=== bench.{name}: {what} (about {minutes:g} min)", flush=True)
        started = time.perf_counter()
        code = subprocess.call([sys.executable, "-m", f"bench.{name}"])
        timings[name] = time.perf_counter() - started
        if code:
            failed.append(name)
            print(f"=== bench.{name} FAILED (exit {code})", flush=True)
    print("\n=== times: " + ", ".join(f"{n} {s / 60:.1f} min" for n, s in timings.items()))
    if failed:
        raise SystemExit(f"failed: {failed}")


if __name__ == "__main__":
    main()
