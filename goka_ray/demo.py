"""The demo: click counting, run with ``make demo`` (or ``goka-ray demo``)."""

from __future__ import annotations

import random
import sys

from goka_ray import Context, Input, Persist, Tester, codecs, define_group, table


def count_click(ctx: Context, msg: str) -> None:
    ctx.set_value((ctx.value() or 0) + 1)


def main(argv: list[str] | None = None) -> int:
    graph = define_group(
        "clicks", Input("user-clicks", codecs.String(), count_click), Persist(codecs.Int())
    )
    tester = Tester(graph)
    rng = random.Random(7)
    for _ in range(1000):
        tester.consume("user-clicks", f"user-{rng.randrange(20)}", "click")
    top = sorted(tester.table_items(table("clicks")).items(), key=lambda kv: -kv[1])[:5]
    for user, n in top:
        sys.stdout.write(f"{user:>10} {n}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
