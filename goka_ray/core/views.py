"""What every view of a table shares, however it is served: its states, its status record,
the observer of its state, and the read API (:class:`TableView`).

Two kinds of view implement :class:`TableView`: the actor-served
:class:`~goka_ray.ray.view.View` (view actors in the Ray cluster hold the copy; any driver,
task or notebook attaches to them) and the in-process :class:`~goka_ray.kafka.local_view.LocalView`
(the copy lives in the reading process, as Goka's View: reads are local lookups). Code that
only reads takes a ``TableView`` and works with either.

States (least advanced first, :data:`STATES`): ``idle`` (not started, or stopped),
``connecting`` (no broker contact yet, or contact lost: reads are served from the last copy
while the reader reconnects), ``recovering`` (reading the changelog to its end, or reloading a
recreated one), ``running`` (caught up, following the changelog).
"""

from __future__ import annotations

import abc
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar

from goka_ray.errors import GokaRayError

__all__ = ["STATES", "TableReads", "TableView", "ViewObserver", "ViewStatus", "state_rank"]

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=str | bytes)  # a key as the caller gives it


@dataclass(frozen=True)
class ViewStatus:
    """A reader of a view (a view actor, or an in-process view): which table partitions it
    serves and how current they are."""

    #: the states of a view, least advanced first (a view handle reports its least advanced
    #: actor): ``idle`` not started; ``connecting`` no broker contact yet, or contact lost
    #: (reads are served from the last copy); ``recovering`` reading the changelog to its end;
    #: ``running`` caught up and following the changelog
    STATES: ClassVar[tuple[str, ...]] = ("idle", "connecting", "recovering", "running")

    table: str
    #: the view actor's name, or ``local:<pid>`` for an in-process view
    actor_name: str
    partitions: list[int]
    #: connecting | recovering | running
    state: str
    keys: int
    lag: dict[int, int] = field(default_factory=dict)
    node_id: str | None = None
    #: next changelog offset to apply, per partition (absent: nothing read yet)
    offsets: dict[int, int] = field(default_factory=dict)
    #: times the reader lost (or could not reach) the broker, or failed, and started over
    reconnects: int = 0
    #: partitions reloaded from the beginning because their changelog was recreated
    reloads: int = 0
    #: why the reader is connecting (None while connected)
    error: str | None = None


STATES = ViewStatus.STATES
_RANK = {state: i for i, state in enumerate(STATES)}


def state_rank(state: str) -> int:
    """How advanced ``state`` is (0 for ``idle``); raises KeyError for an unknown state."""
    return _RANK[state]


class TableView(Protocol):
    """The read API of a view (Goka's View): eventually consistent reads of a table.

    Keys are str (encoded losslessly, :mod:`goka_ray.core.keys`) or bytes; values come
    decoded with the view's codec; None means absent.
    """

    table: str

    def get(self, key: str | bytes) -> Any: ...
    def get_many(self, keys: Iterable[K]) -> dict[K, Any]: ...
    def has(self, key: str | bytes) -> bool: ...
    def iterator(
        self, start: str | bytes | None = None, end: str | bytes | None = None
    ) -> Iterator[tuple[str, Any]]: ...
    def items(self) -> Iterator[tuple[str, Any]]: ...
    def __len__(self) -> int: ...
    @property
    def state(self) -> str: ...
    def wait_for(self, state: str = "running", timeout: float = 60.0) -> str: ...
    def observe(
        self, callback: Callable[[str, str], Any], interval: float = 0.5
    ) -> ViewObserver: ...
    def status(self) -> list[ViewStatus]: ...


class _Stateful(Protocol):
    table: str

    @property
    def state(self) -> str: ...


class ViewObserver:
    """Calls ``callback(old_state, new_state)`` on every change of a view's state.

    Made by ``observe()`` of a view; polls ``view.state`` every ``interval`` seconds from a
    daemon thread until ``stop()``, so changes shorter than that may be missed (the callback
    sees consecutive observed states). A callback that raises is logged and keeps being called
    on later changes.
    """

    def __init__(
        self, view: _Stateful, callback: Callable[[str, str], Any], interval: float
    ) -> None:
        self.view = view
        self.callback = callback
        self.interval = interval
        self.state = view.state
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, daemon=True, name=f"goka-ray-observe-{view.table}"
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                current = self.view.state
            except Exception:
                logger.warning(
                    "observer of %s: cannot read its state", self.view.table, exc_info=True
                )
                continue
            old = self.state
            if current == old or self._stop.is_set():
                continue
            self.state = current
            try:
                self.callback(old, current)
            except Exception:
                logger.exception(
                    "observer of %s: callback(%r, %r) raised", self.view.table, old, current
                )

    @property
    def running(self) -> bool:
        """Whether the observer still polls."""
        return self._thread.is_alive()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop polling; waits up to ``timeout`` for the thread (not when called from it)."""
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def __enter__(self) -> ViewObserver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class TableReads(abc.ABC):
    """The reads a view derives from its own ``get``, ``iterator`` and ``state``: ``has``,
    ``items`` and ``observe``, the same for every kind of view (View and LocalView)."""

    table: str

    @abc.abstractmethod
    def get(self, key: str | bytes) -> Any:
        """The value of ``key`` (None if absent)."""

    @abc.abstractmethod
    def iterator(
        self,
        start: str | bytes | None = None,
        end: str | bytes | None = None,
        *,
        page_size: int = 1000,
    ) -> Iterator[tuple[str, Any]]:
        """(key, value) pairs with ``start <= key < end``, ordered by key bytes."""

    @property
    @abc.abstractmethod
    def state(self) -> str:
        """The view's state, one of :data:`STATES`."""

    def has(self, key: str | bytes) -> bool:
        """Whether ``key`` (str or bytes) has a value."""
        return self.get(key) is not None

    def items(self) -> Iterator[tuple[str, Any]]:
        """Every (key, value), ordered by key across all partitions (``iterator()``)."""
        return self.iterator()

    def observe(self, callback: Callable[[str, str], Any], interval: float = 0.5) -> ViewObserver:
        """Call ``callback(old_state, new_state)`` whenever the view's state changes.

        The state is polled every ``interval`` seconds from a daemon thread of this process,
        so changes shorter than that may be missed (the callback sees consecutive observed
        states). The first state is taken now, before this returns. Stop with ``.stop()``.
        """
        if interval <= 0:
            raise GokaRayError(f"observe(interval={interval}): the interval must be > 0 seconds")
        return ViewObserver(self, callback, interval)
