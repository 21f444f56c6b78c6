"""KeyIndex: the sorted keys of a storage, for paged range reads of a view.

A dict (a view's in-memory copy) has no order; a view pages through it in key-byte order with
this index. Not thread-safe: its owner calls :meth:`KeyIndex.note` with every write and
:meth:`KeyIndex.page` for reads under the same lock.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import Protocol

__all__ = ["KeyIndex"]


class Indexed(Protocol):
    """What the index reads: pairs in key order (for a rebuild), and single values."""

    def get(self, key: bytes) -> bytes | None: ...
    def iterate(self) -> Iterator[tuple[bytes, bytes]]: ...


class KeyIndex:
    """The sorted keys of one partition's storage, for paged range reads.

    Kept current cheaply: new keys are noted on write and inserted when the next page is read;
    deleted keys stay in the list (skipped on read) until enough pile up to rebuild it.
    """

    def __init__(self) -> None:
        self._keys: list[bytes] = []
        self._added: set[bytes] = set()
        self._stale = 0
        self._rebuild = True

    def note(self, key: bytes, existed: bool, exists: bool) -> None:
        """Record a write: whether ``key`` existed before and exists after it."""
        if self._rebuild:
            return  # the next read rebuilds the list from the storage anyway
        if exists and not existed:
            self._added.add(key)
        elif existed and not exists:
            self._stale += 1
        if len(self._added) + self._stale > self._limit():
            self.invalidate()  # cheaper to rebuild than to patch; bounds the memory of notes

    def _limit(self) -> int:
        return max(1024, len(self._keys) // 8)

    def invalidate(self) -> None:
        """The storage was replaced: rebuild from it on the next read."""
        self._keys, self._added, self._stale, self._rebuild = [], set(), 0, True

    def _refresh(self, storage: Indexed) -> None:
        keys = self._keys
        if self._rebuild:
            self._keys = [k for k, _ in storage.iterate()]
            self._added, self._stale, self._rebuild = set(), 0, False
            return
        for key in sorted(self._added):
            i = bisect.bisect_left(keys, key)
            if i == len(keys) or keys[i] != key:
                keys.insert(i, key)
        self._added.clear()

    def page(
        self, storage: Indexed, start: bytes | None, end: bytes | None, limit: int
    ) -> Iterator[tuple[bytes, bytes]]:
        """Up to ``limit`` pairs with start <= key < end, in key order."""
        self._refresh(storage)
        keys = self._keys
        i = 0 if start is None else bisect.bisect_left(keys, start)
        n = 0
        while i < len(keys) and n < limit:
            key = keys[i]
            i += 1
            if end is not None and key >= end:
                return
            value = storage.get(key)
            if value is not None:
                n += 1
                yield key, value
