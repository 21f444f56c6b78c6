"""Context: what a callback sees of the message it processes, and its only way to act.

A Context lives for one callback call. Its effects (a table write, emits, loopbacks) are
collected here and handed to the partition core only if the callback returns normally, so a
failing message leaves no trace.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NoReturn

from goka_ray.core.messages import Headers, InputMessage, OutgoingMessage, headers_dict
from goka_ray.errors import CallbackFailed, ContextError

if TYPE_CHECKING:
    from goka_ray.core.partition import PartitionCore

__all__ = ["Context", "DeferredCommit"]

_UNSET = object()


class DeferredCommit:
    """The callable ``ctx.defer_commit()`` returns: call it once the message's work is done.

    ``done()`` (or ``done(None)``) marks success; ``done(error)`` fails the partition with
    ``error`` and the message's coordinates. Thread-safe; calls after the first are ignored.
    The runner commits a batch's input offsets only once every deferred commit of the batch
    was called without an error.
    """

    __slots__ = ("_done", "_error", "_lock", "key", "offset", "partition", "topic")

    def __init__(self, topic: str, partition: int, offset: int, key: str) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._error: BaseException | None = None

    def __call__(self, err: BaseException | str | None = None) -> None:
        with self._lock:
            if self._done.is_set():
                return
            if err is not None and not isinstance(err, BaseException):
                err = CallbackFailed(str(err))
            self._error = err
            self._done.set()

    @property
    def done(self) -> bool:
        """Whether the callable was called."""
        return self._done.is_set()

    @property
    def error(self) -> BaseException | None:
        """The error it was called with (None while not called, or on success)."""
        return self._error

    def wait(self, timeout: float | None = None) -> bool:
        """Block until called (or ``timeout`` seconds); returns whether it was called."""
        return self._done.wait(timeout)

    def __repr__(self) -> str:
        state = "pending" if not self.done else ("failed" if self._error else "done")
        return (
            f"DeferredCommit({self.topic}[{self.partition}]@{self.offset}, key={self.key!r}, "
            f"{state})"
        )


class Context:
    """The handle a callback ``(ctx, msg)`` receives.

    Attributes: ``key`` (str), ``topic``, ``partition``, ``offset``, ``timestamp`` (ms since the
    epoch, as Kafka stores it), ``headers`` (dict of str -> bytes), ``group``.
    """

    __slots__ = (
        "_core",
        "_deferred",
        "_emits",
        "_headers",
        "_message",
        "_write",
        "_write_headers",
        "group",
        "key",
    )

    def __init__(self, core: PartitionCore, message: InputMessage, key: str) -> None:
        self._core = core
        self._message = message
        self.key = key
        self.group = core.group
        self._write: Any = _UNSET  # encoded new table value, None for a delete
        self._write_headers: Headers | None = None  # headers of that changelog record
        self._emits: list[OutgoingMessage] | None = None
        self._headers: dict[str, bytes] | None = None
        self._deferred: list[DeferredCommit] | None = None

    # -- message metadata ---------------------------------------------------------------------

    @property
    def topic(self) -> str:
        return self._message.topic

    @property
    def partition(self) -> int:
        return self._message.partition

    @property
    def offset(self) -> int:
        return self._message.offset

    @property
    def timestamp(self) -> int:
        return self._message.timestamp

    @property
    def headers(self) -> dict[str, bytes]:
        if self._headers is None:
            self._headers = headers_dict(self._message.headers)
        return self._headers

    # -- the group table ----------------------------------------------------------------------

    def value(self) -> Any:
        """The group table's value for this message's key (None if absent).

        Reflects this callback's own ``set_value``/``delete`` and every earlier message.
        """
        codec = self._core.table_codec("ctx.value()")
        raw = self._core.read_own(self.key.encode()) if self._write is _UNSET else self._write
        return None if raw is None else codec.decode(raw)

    def set_value(self, value: Any, headers: Mapping[str, str | bytes] | None = None) -> None:
        """Store ``value`` for this message's key in the group table (and its changelog).

        ``headers`` go on the changelog record, over the processor's default headers. Only the
        last write of a key in a batch reaches the changelog, with its own headers.
        """
        codec = self._core.table_codec("ctx.set_value()")
        if value is None:
            raise ContextError(
                "ctx.set_value(None): a table value cannot be None; use ctx.delete() to remove "
                "the key"
            )
        data = codec.encode(value)
        self._write_headers = self._core.outgoing_headers(headers)
        self._write = data

    def delete(self, headers: Mapping[str, str | bytes] | None = None) -> None:
        """Remove this message's key from the group table (a tombstone in the changelog).

        ``headers`` go on the tombstone, over the processor's default headers.
        """
        self._core.table_codec("ctx.delete()")
        self._write_headers = self._core.outgoing_headers(headers)
        self._write = None

    # -- streams ------------------------------------------------------------------------------

    def emit(
        self,
        topic: str,
        key: str,
        value: Any,
        headers: Mapping[str, str | bytes] | None = None,
    ) -> None:
        """Produce ``value`` (None = tombstone) to the Output ``topic``, partitioned by ``key``.

        ``headers`` are added over the processor's default headers.
        """
        codec = self._core.output_codec(topic)
        self._append(topic, key, value, codec, headers, "ctx.emit()")

    def loopback(
        self, key: str, value: Any, headers: Mapping[str, str | bytes] | None = None
    ) -> None:
        """Send ``value`` to the group's loop topic; the Loop callback gets it for ``key``.

        ``headers`` are added over the processor's default headers.
        """
        topic, codec = self._core.loop_edge()
        self._append(topic, key, value, codec, headers, "ctx.loopback()")

    def _append(
        self,
        topic: str,
        key: str,
        value: Any,
        codec: Any,
        headers: Mapping[str, str | bytes] | None,
        call: str,
    ) -> None:
        if not isinstance(key, str):
            raise ContextError(f"{call}: key must be str, not {type(key).__name__} {key!r:.40}")
        data = None if value is None else codec.encode(value)
        hdrs = self._core.outgoing_headers(headers)
        if self._emits is None:
            self._emits = []
        self._emits.append(OutgoingMessage(topic, key.encode(), data, hdrs))

    # -- other tables -------------------------------------------------------------------------

    def join(self, table: str) -> Any:
        """The value of this message's key in the joined (co-partitioned) ``table``."""
        return self._core.read_join(table, self.key)

    def lookup(self, table: str, key: str) -> Any:
        """The value of ``key`` in the lookup ``table`` (any partition)."""
        if not isinstance(key, str):
            raise ContextError(f"ctx.lookup({table!r}, {key!r}): key must be str")
        return self._core.read_lookup(table, key)

    # -- commit -------------------------------------------------------------------------------

    def defer_commit(self) -> DeferredCommit:
        """Hold back this message's offset commit until the returned callable is called.

        For work the callback hands to another thread or service: call ``done()`` when it
        finished, or ``done(error)`` to fail the partition. Every callable returned must be
        called (each call of ``defer_commit`` returns a new one); until then the offset of this
        message and the ones after it is not committed. Use the callable, never the Context,
        from other threads. If the callback raises, its deferred commits are dropped with the
        rest of its effects.
        """
        m = self._message
        deferred = DeferredCommit(m.topic, m.partition, m.offset, self.key)
        if self._deferred is None:
            self._deferred = []
        self._deferred.append(deferred)
        return deferred

    # -- failure ------------------------------------------------------------------------------

    def fail(self, error: BaseException | str) -> NoReturn:
        """Stop processing: the partition fails with ``error`` and this message's coordinates.

        Nothing this callback did is applied, and the message's offset is not committed.
        """
        if isinstance(error, BaseException):
            raise CallbackFailed(str(error) or type(error).__name__) from error
        raise CallbackFailed(str(error))

    def __repr__(self) -> str:
        m = self._message
        return (
            f"Context(group={self.group!r}, {m.topic}[{m.partition}]@{m.offset}, key={self.key!r})"
        )
