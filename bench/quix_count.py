"""Quix Streams counting clicks per key: the peer baseline of ``bench.ray_throughput``.

    .venv-quix/bin/python -m bench.quix_count BROKERS TOPIC MESSAGES STATE_DIR

Runs in Quix Streams' own venv (``make bench`` makes ``.venv-quix``), so it imports nothing
from goka-ray. One Application with Quix's defaults (RocksDB state, changelog topics, commit
every 5 s) counts messages per key in its state, as goka-ray's click counter does in its
table, and stops once it processed MESSAGES; the run ends when ``Application.run`` returns
(after its final checkpoint: state and changelog flushed, offsets committed). Prints one JSON
line: seconds from creating the Application to then, seconds until the first message, the
messages processed and the sum of every key's last count (equal to MESSAGES when the state
counted every message once).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def main() -> None:
    from quixstreams import Application

    brokers, topic_name, messages, state_dir = sys.argv[1:5]
    total = int(messages)
    started = time.perf_counter()
    first: list[float] = []
    processed = 0
    last: dict[Any, int] = {}
    app = Application(
        broker_address=brokers,
        consumer_group=f"bench-quix-{time.time_ns()}",
        auto_offset_reset="earliest",
        state_dir=state_dir,
        # the local broker answers JoinGroup after about half the session timeout
        consumer_extra_config={"session.timeout.ms": 6000},
    )
    topic = app.topic(topic_name, key_deserializer="bytes", value_deserializer="bytes")

    def count(value: bytes, key: Any, timestamp: int, headers: Any, state: Any) -> None:
        nonlocal processed
        if not first:
            first.append(time.perf_counter() - started)
        n = state.get("count", 0) + 1
        state.set("count", n)
        last[key] = n
        processed += 1
        if processed == total:
            app.stop()

    app.dataframe(topic).update(count, stateful=True, metadata=True)
    app.run()
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "seconds": seconds,
                "first_message": first[0] if first else None,
                "processed": processed,
                "counted": sum(last.values()),
                "keys": len(last),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
