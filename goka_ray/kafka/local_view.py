"""LocalView: a table copy inside the reading process, as Goka's View; no Ray needed.

    with LocalView("kafka:9092", table("clicks"), codecs.Int()) as view:
        view.wait_for("running", 60)
        view.get("alice")                      # a dict lookup: a few microseconds

For services that read a table per request. The actor-served
:class:`~goka_ray.ray.view.View` keeps the copy in view actors of a Ray cluster, shared by
every notebook, task and driver that attaches, and each read is a Ray call (about a
millisecond); a LocalView keeps a whole copy in each process that opens it, and each read is a
local lookup. Both have the read API of :class:`~goka_ray.core.views.TableView`.

A class of its own rather than a mode of ``View``: the two differ in what they are, not only
in how they read. A View is a handle on named actors that outlive it (``start`` attaches to
running ones, it travels into Ray tasks, ``stop`` removes the actors for every process); a
LocalView is the copy itself, owned by one process (``start`` reads the whole changelog,
``stop`` drops it, it cannot be sent elsewhere), with settings of its own (``storage``). And
it lives below the Ray layer, so a service imports and runs it without Ray.

A :class:`~goka_ray.kafka.changelog.ChangelogFollower` on a daemon thread reads every
partition of the table's changelog into the copies (:mod:`goka_ray.kafka.view_copies`): in
memory (``storage="memory"``, one dict for the whole table: reads need no partitioner hash) or
in LevelDB (``storage="leveldb"``, for tables larger than memory). It behaves as a view
actor's follower does: states ``connecting`` (no broker yet, or lost: reads are served from
the last copy while it reconnects with backoff, 0.5 s doubling to 10 s), ``recovering``
(reading to the end), ``running`` (following). A recreated changelog is reloaded aside and
served once caught up; an update callback that raises skips its record (logged).

Invariants: only the follower thread writes the copies, under the view's lock, a poll's
records of a partition and their offset at once; readers on any thread see whole batches. The
copy is a cache of the changelog, rebuilt at every :meth:`LocalView.start` (nothing is kept
after :meth:`LocalView.stop`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from goka_ray.core.codecs import Codec, as_codec
from goka_ray.core.config import Config
from goka_ray.core.graph import check_update_callback
from goka_ray.core.keys import decode_key, encode_key
from goka_ray.core.partitioner import MURMUR2, Partitioner
from goka_ray.core.tables import TablePartition, UpdateCallback
from goka_ray.core.views import STATES, TableReads, ViewStatus, state_rank
from goka_ray.errors import GokaRayError, TopicError
from goka_ray.kafka.changelog import ChangelogFollower
from goka_ray.kafka.clients import check_client_settings
from goka_ray.kafka.topics import TopicManager
from goka_ray.kafka.view_copies import LevelDBCopies, MemoryCopies, ViewCopies

__all__ = ["LocalView"]

logger = logging.getLogger(__name__)

PAGE_SIZE = 1000  # pairs per page that LocalView.iterator takes under the lock
K = TypeVar("K", bound=str | bytes)  # a key as the caller gives it


class LocalView(TableReads):
    """A read-only, eventually consistent copy of a table kept in this process.

    ``brokers`` (or the config's), ``table`` (the table topic, ``table("group")``), ``codec``
    of the values, ``config`` (a :class:`~goka_ray.core.config.Config`, mapping or YAML path:
    its ``kafka.consumer`` settings are used). ``storage``: ``"memory"`` (default) or
    ``"leveldb"``, in a directory of its own under ``storage_dir`` (default: the config's
    ``storage_dir``), deleted on :meth:`stop`. ``update(ctx, storage, key, value)``, if given,
    replaces the default store/delete of every changelog record (as for ``View(update=)``).
    ``partitioner`` must be the one the table is written with (LevelDB reads hash the key).

    Raises :class:`~goka_ray.errors.TopicError` from :meth:`start` if the table topic does
    not exist; :class:`~goka_ray.errors.GokaRayError` for reads before :meth:`start`.
    """

    def __init__(
        self,
        brokers: str | None,
        table: str,
        codec: Codec,
        config: Config | Mapping[str, Any] | str | Path | None = None,
        *,
        partitioner: Partitioner = MURMUR2,
        update: UpdateCallback | None = None,
        storage: Literal["memory", "leveldb"] = "memory",
        storage_dir: str | Path | None = None,
    ) -> None:
        if update is not None:
            check_update_callback(update, f"LocalView({table!r})")
        if storage not in ("memory", "leveldb"):
            raise GokaRayError(
                f"LocalView({table!r}, storage={storage!r}): use 'memory' or 'leveldb'"
            )
        self.update = update
        self.config = Config.load(config)
        self.brokers: str = self.config.resolve_brokers(brokers)
        self.table = table
        self.codec = as_codec(codec, f"LocalView({table!r})")
        self.partitioner = partitioner
        self.storage = storage
        self.storage_dir = Path(storage_dir if storage_dir is not None else self.config.storage_dir)
        self._lock = threading.RLock()
        self._copies: ViewCopies | None = None
        self._follower: ChangelogFollower | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> LocalView:
        """Start following the table's changelog on a daemon thread (returns at once; reads
        see the copy as it is read: ``wait_for("running")`` to wait for all of it)."""
        if self._thread is not None:
            return self
        consumer_config = self.config.consumer_config()
        check_client_settings(consumer_config)
        with TopicManager(self.brokers) as topics:
            partitions = topics.partitions(self.table)
        if partitions is None:
            raise TopicError(
                f"table topic {self.table!r} does not exist at {self.brokers}; start the group "
                f"that owns it first (or create it)"
            )
        copies: ViewCopies
        if self.storage == "memory":
            copies = MemoryCopies(self._lock)
        else:
            copies = LevelDBCopies(
                self._lock, self.storage_dir, self.table, partitions, self.partitioner
            )
        follower = ChangelogFollower(
            self.brokers,
            group_id=f"goka-ray-local-view-{self.table}-{os.getpid()}",
            consumer_config=consumer_config,
            on_update_error="skip",
            fresh_storage=copies.fresh,
            name=f"local view of {self.table}",
        )
        for p in range(partitions):
            tp = TablePartition(self.table, p, copies.storage(p), self.codec, update=self.update)
            copies.tables[p] = tp
            follower.add(tp)
        self._copies, self._follower = copies, follower
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._follow, daemon=True, name=f"goka-ray-local-view-{self.table}"
        )
        self._thread.start()
        return self

    def _follow(self) -> None:
        follower = self._follower
        assert follower is not None
        try:
            follower.follow(self._stop)
        except BaseException:
            logger.exception("local view of %s: the changelog reader died", self.table)
            raise
        finally:
            follower.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop following and drop the copy (reads raise until :meth:`start` again)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout)
        if thread.is_alive():
            logger.warning(
                "local view of %s: the changelog reader did not stop within %.0fs",
                self.table,
                timeout,
            )
        copies, self._copies, self._follower = self._copies, None, None
        if copies is not None:
            with self._lock:
                copies.close()

    def __enter__(self) -> LocalView:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _require(self) -> ViewCopies:
        copies = self._copies
        if copies is None:
            raise GokaRayError(f"LocalView({self.table!r}) is not started; call start() first")
        return copies

    # -- reads ----------------------------------------------------------------------------------

    def get(self, key: str | bytes) -> Any:
        """The value of ``key`` (str, encoded losslessly, or bytes; None if absent)."""
        copies = self._copies
        if copies is None:
            self._require()
        assert copies is not None
        if type(key) is str:
            try:
                kb = key.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                kb = _key(key, "LocalView.get")  # raises, saying why
        else:
            kb = _key(key, "LocalView.get")
        raw = copies.get(kb)
        return None if raw is None else self.codec.decode(raw)

    def get_many(self, keys: Iterable[K]) -> dict[K, Any]:
        """Values of many keys, read under the lock at once (None where absent), keyed as
        given; keys are str or bytes, as for :meth:`get`."""
        copies = self._require()
        keys = list(keys)
        raws = copies.get_many([_key(k, "LocalView.get_many") for k in keys])
        decode = self.codec.decode
        return {k: None if r is None else decode(r) for k, r in zip(keys, raws, strict=True)}

    def iterator(
        self,
        start: str | bytes | None = None,
        end: str | bytes | None = None,
        *,
        page_size: int = PAGE_SIZE,
    ) -> Iterator[tuple[str, Any]]:
        """(key, value) pairs with ``start <= key < end``, ordered by key bytes, keys as
        lossless text (as :meth:`goka_ray.ray.view.View.iterator`).

        Lazy: pages of ``page_size`` pairs are taken under the lock, so a large table is never
        copied at once and the follower is not held up. Not a snapshot: a key written during
        the iteration may or may not be seen, but each key comes at most once and in order.
        """
        if page_size < 1:
            raise GokaRayError(f"iterator(page_size={page_size}): the page size must be >= 1")
        copies = self._require()
        lo = None if start is None else _key(start, "LocalView.iterator")
        hi = None if end is None else _key(end, "LocalView.iterator")
        if lo is not None and hi is not None and lo >= hi:
            return
        decode = self.codec.decode
        while True:
            with self._lock:
                pairs = copies.page(lo, hi, page_size)
            for kb, raw in pairs:
                yield decode_key(kb), decode(raw)
            if len(pairs) < page_size:
                return
            lo = pairs[-1][0] + b"\x00"  # the least key after the last one

    def __len__(self) -> int:
        """The number of keys in the copy."""
        copies = self._require()
        with self._lock:
            return copies.count()

    # -- state ----------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """idle (not started or stopped) | connecting | recovering | running (see
        :mod:`goka_ray.core.views`)."""
        follower = self._follower
        if follower is None or self._thread is None:
            return "idle"
        return follower.state.value

    def wait_for(self, state: str = "running", timeout: float = 60.0) -> str:
        """Block until the view is in ``state`` or a more advanced one; returns the state reached.

        Raises TimeoutError after ``timeout`` seconds, with the reader's last error.
        """
        if state not in STATES:
            raise GokaRayError(f"unknown view state {state!r}; use one of {', '.join(STATES)}")
        if self._thread is None and state != "idle":
            raise GokaRayError(f"LocalView({self.table!r}) is not started; call start() first")
        deadline = time.monotonic() + timeout
        while True:
            current = self.state
            if state_rank(current) >= state_rank(state):
                return current
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        follower = self._follower
        error = follower.error if follower is not None else None
        raise TimeoutError(
            f"local view of {self.table} not {state} after {timeout}s: {current}"
            + (f" ({error})" if error else "")
            + f". Check that the brokers at {self.brokers} are reachable and the table topic "
            f"exists; the view keeps retrying"
        )

    def status(self) -> list[ViewStatus]:
        """One status: this process's copy (state, keys, offsets, lag, reconnects, reloads,
        last connection error); the same record a view actor reports."""
        copies, follower = self._require(), self._follower
        assert follower is not None
        return [
            ViewStatus(
                table=self.table,
                actor_name=f"local:{os.getpid()}",
                partitions=sorted(copies.tables),
                state=self.state,
                keys=len(self),
                lag={p: lag for (_, p), lag in follower.lags.items()},
                offsets={p: o for (_, p), o in follower.offsets().items()},
                reconnects=follower.reconnects,
                reloads=follower.reloads,
                error=follower.error,
            )
        ]

    def __reduce__(self) -> tuple[Any, ...]:
        raise GokaRayError(
            f"LocalView({self.table!r}) keeps its copy in this process and cannot be sent to "
            f"another one; open a LocalView there, or use View (actor-served) to share a copy"
        )

    def __repr__(self) -> str:
        return f"LocalView({self.table!r}, storage={self.storage!r}, state={self.state!r})"


def _key(key: str | bytes, call: str) -> bytes:
    try:
        return encode_key(key, call)
    except TypeError as exc:
        raise GokaRayError(str(exc)) from None
