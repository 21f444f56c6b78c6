"""Ways a LevelDB directory gets damaged on disk, done to a real directory.

Each function takes the directory of one LevelDB copy (closed, unless it says otherwise)
and damages it the way a disk, a crash, a careless operator or a cleanup script would.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def tables(path: Path) -> list[Path]:
    """The table files of a LevelDB directory, oldest first."""
    return sorted(path.glob("*.ldb")) + sorted(path.glob("*.sst"))


def logs(path: Path) -> list[Path]:
    return sorted(path.glob("*.log"))


def delete_current(path: Path) -> None:
    """``CURRENT`` (which names the MANIFEST) is gone: the issue's example."""
    (path / "CURRENT").unlink()


def truncate_table(path: Path) -> None:
    """The biggest table file loses its second half (a partial copy, a full disk)."""
    victim = max(tables(path), key=lambda f: f.stat().st_size)
    os.truncate(victim, victim.stat().st_size // 2)


def delete_table(path: Path) -> None:
    """The table files are gone (a cleanup script, a partial restore). All of them: a table
    file LevelDB no longer lists (left over from a compaction cut short at close) may be
    the one picked, and its loss is no damage."""
    for table in tables(path):
        table.unlink()


def garble_manifest(path: Path) -> None:
    """The MANIFEST ``CURRENT`` names holds garbage."""
    manifest = path / (path / "CURRENT").read_text().strip()
    manifest.write_bytes(os.urandom(max(64, manifest.stat().st_size)))


def truncate_log(path: Path) -> None:
    """LevelDB's write-ahead log loses its second half (a crash mid-write, a partial copy)."""
    victim = max(logs(path), key=lambda f: f.stat().st_size)
    os.truncate(victim, victim.stat().st_size // 2)


def replace_with_other_files(path: Path) -> None:
    """The directory holds something that is not LevelDB at all."""
    for entry in path.iterdir():
        entry.unlink()
    (path / "notes.txt").write_text("not a database")
    (path / "000001.log").write_bytes(b"\x00" * 100)


def corrupt_table_in_place(path: Path) -> None:
    """Bytes in the middle of every table file are overwritten, the sizes unchanged (bit rot,
    a stray write); safe while LevelDB has the files mapped."""
    for table in tables(path):
        size = table.stat().st_size
        with open(table, "r+b") as f:
            f.seek(size // 4)
            f.write(b"\xa5" * max(1, size // 4))


#: the damage done at rest, by name (the test ids)
AT_REST: dict[str, Callable[[Path], None]] = {
    "current-deleted": delete_current,
    "table-truncated": truncate_table,
    "table-deleted": delete_table,
    "manifest-garbage": garble_manifest,
    "log-truncated": truncate_log,
    "not-leveldb": replace_with_other_files,
    "table-corrupted": corrupt_table_in_place,
}
