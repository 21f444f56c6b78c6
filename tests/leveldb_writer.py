"""Writes numbered batches into a LevelDB copy until killed (for crash tests).

Run as ``python leveldb_writer.py PATH [LAST]``; prints each batch's offset once it is
written; with LAST, it stops writing after batch LAST and waits (without closing) to be
killed. :func:`batches` is deterministic, so a test can tell the state after any batch.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from goka_ray.core.storage import LevelDBStorage, WriteBatch

KEYS = 2_000


def batches() -> Iterator[WriteBatch]:
    """Batch i sets offset i and writes (or deletes) 200 of KEYS keys."""
    rng = random.Random(11)
    i = 0
    while True:
        batch = WriteBatch()
        for _ in range(200):
            key = b"user-%05d" % rng.randrange(KEYS)
            if rng.random() < 0.1:
                batch.delete(key)
            else:
                batch.set(key, b"%d-%s" % (i, key))
        batch.set_offset(i)
        yield batch
        i += 1


def state_after(offset: int) -> dict[bytes, bytes]:
    """The pairs of a copy after batch ``offset``."""
    state: dict[bytes, bytes] = {}
    for batch in batches():
        for key, value in batch.writes.items():
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value
        if batch.offset == offset:
            return state
    raise AssertionError("unreachable")


def main() -> None:
    storage = LevelDBStorage(Path(sys.argv[1]), write_buffer_size=64 << 10)
    last = int(sys.argv[2]) if len(sys.argv) > 2 else None
    for batch in batches():
        storage.write(batch)
        print(batch.offset, flush=True)
        if batch.offset == last:
            time.sleep(3600)


if __name__ == "__main__":
    main()
