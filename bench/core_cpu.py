"""CPU per message of the partition core against a plain Python loop doing the same counting,
in one run (no broker, no Ray: what the batch loop itself costs).

    python -m bench.core_cpu [--messages 200000] [--keys 2500] [--batch 20000] [--repeats 7]

Both count clicks per user over the same batches of ``InputMessage`` (``--keys`` users,
100-byte values):
  plain  a dict of encoded counts: decode each key (UTF-8), read the stored 8-byte count,
         add one, encode it (the work a counter cannot avoid, with the same codecs);
  core   ``PartitionCore.process`` + ``commit`` of the click counter (``Persist(Int)``,
         in-memory table): Context, codecs, the batch's pending writes and its changelog
         records, positions and counters.
Prints the CPU time per message (``time.process_time``, the best of ``--repeats`` passes, the
two taking turns; microseconds) of each and the core's ratio to the plain loop: the framework's own cost.
"""

from __future__ import annotations

import argparse
import random
import struct
import time
from collections.abc import Callable

from goka_ray import Context, Input, Persist, codecs, define_group
from goka_ray.core.messages import InputMessage
from goka_ray.core.partition import PartitionCore
from goka_ray.core.storage import MemoryStorage

_COUNT = struct.Struct(">q")


def count(ctx: Context, click: bytes) -> None:
    ctx.set_value((ctx.value() or 0) + 1)


def batches(messages: int, keys: int, size: int) -> list[list[InputMessage]]:
    rnd = random.Random(1)
    value = b"x" * 100
    out: list[list[InputMessage]] = []
    for start in range(0, messages, size):
        out.append(
            [
                InputMessage("clicks", 0, off, f"user-{rnd.randrange(keys)}".encode(), value, 0)
                for off in range(start, min(start + size, messages))
            ]
        )
    return out


def plain_pass(work: list[list[InputMessage]], table: dict[str, bytes]) -> None:
    for batch in work:
        for msg in batch:
            assert msg.key is not None
            key = msg.key.decode("utf-8", "surrogateescape")
            raw = table.get(key)
            n = 0 if raw is None else _COUNT.unpack(raw)[0]
            table[key] = _COUNT.pack(n + 1)


def core_pass(work: list[list[InputMessage]], core: PartitionCore) -> None:
    for batch in work:
        core.commit(core.process(batch), None)


def best_us(runs: dict[str, Callable[[], None]], messages: int, repeats: int) -> dict[str, float]:
    """The best CPU time per message (microseconds) of each run, the runs taking turns so that
    each sees the machine as the others do."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.process_time()
            run()
            times[name].append(time.process_time() - started)
    return {name: min(t) / messages * 1e6 for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--keys", type=int, default=2_500)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    work = batches(args.messages, args.keys, args.batch)
    graph = define_group(
        "bench-core", Input("clicks", codecs.Bytes(), count), Persist(codecs.Int())
    )
    core = PartitionCore(graph, 0, MemoryStorage())
    table: dict[str, bytes] = {}
    best = best_us(
        {"plain": lambda: plain_pass(work, table), "core": lambda: core_pass(work, core)},
        args.messages,
        args.repeats,
    )
    plain, framework = best["plain"], best["core"]
    # both counted every click of every pass: the results must agree before the times mean much
    assert core.table is not None
    stored = {k.decode(): v for k, v in core.table.storage.iterate()}
    if stored != table:
        raise SystemExit("the core's table and the plain loop's counts differ")
    print(
        f"{args.messages:,} messages, {args.keys:,} keys, batches of {args.batch:,}; CPU per "
        f"message, best of {args.repeats} passes\n"
        f"plain loop      {plain:6.2f} us/msg\n"
        f"partition core  {framework:6.2f} us/msg   {framework / plain:.2f}x the plain loop"
    )


if __name__ == "__main__":
    main()
