"""Context: what a callback sees of the message it processes, and its only way to act.

A Context lives for one callback call. Its effects (a table write, emits, loopbacks, deferred
commits) are collected in an :class:`Effects` record that the partition core applies only if
the callback returns normally, so a failing message leaves no trace. The record is the whole
hand-over: the core reads nothing of a Context. Invariant: only the Context the record names
(``Effects.context``) writes into it, and only during its callback.

Keys: ``ctx.key`` is the message key as lossless text (see :mod:`goka_ray.core.keys`) and
``ctx.key_bytes`` the raw bytes; both are None only for a message without a key, which reaches
a callback only under ``Input(null_key="process")`` and then has no table value to read or
write.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

from goka_ray.core.keys import encode_key
from goka_ray.core.messages import Headers, InputMessage, OutgoingMessage, headers_dict
from goka_ray.errors import CallbackFailed, ContextError

if TYPE_CHECKING:
    from goka_ray.core.partition import PartitionCore

__all__ = ["Context", "DeferredCommit", "Effects", "TableWrite"]


class DeferredCommit:
    """The callable ``ctx.defer_commit()`` returns: call it once the message's work is done.

    ``done()`` (or ``done(None)``) marks success; ``done(error)`` fails the partition with
    ``error`` and the message's coordinates. Thread-safe; calls after the first are ignored.
    The runner commits a batch's input offsets only once every deferred commit of the batch
    was called without an error.
    """

    __slots__ = ("_done", "_error", "_lock", "key", "offset", "partition", "topic")

    def __init__(self, topic: str, partition: int, offset: int, key: str | None) -> None:
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


class TableWrite(NamedTuple):
    """A callback's write of its key in the group table: the encoded value (None = delete)
    and the headers of its changelog record (default headers included; None if neither)."""

    key: bytes
    value: bytes | None
    headers: Headers | None


class Effects:
    """What the callback running now did: the record a Context hands its effects over in.

    ``write`` is the callback's last ``set_value``/``delete``, ``emits`` its emits and
    loopbacks in order, ``deferred`` the callables ``defer_commit`` returned; None where it did
    none of that kind. ``context`` is the Context that writes here: the partition core owns one
    record, gives it to each Context it creates (which clears it), applies it once the
    callback returned normally and then sets ``context`` to None, so a Context kept past its
    callback can write nothing (its effect methods raise ContextError). Reused, not allocated
    per message: this is the hot path.
    """

    __slots__ = ("context", "deferred", "emits", "write")

    def __init__(self) -> None:
        self.context: Context | None = None
        self.write: TableWrite | None = None
        self.emits: list[OutgoingMessage] | None = None
        self.deferred: list[DeferredCommit] | None = None

    def __repr__(self) -> str:
        return f"Effects(write={self.write!r}, emits={self.emits!r}, deferred={self.deferred!r})"


#: builds a TableWrite without NamedTuple's Python-level ``__new__`` (once per write)
_record = tuple.__new__


class Context:
    """The handle a callback ``(ctx, msg)`` receives.

    Attributes: ``key`` (str, lossless: see :mod:`goka_ray.core.keys`), ``key_bytes`` (the
    raw Kafka key), ``topic``, ``partition``, ``offset``, ``timestamp`` (ms since the epoch, as
    Kafka stores it), ``headers`` (dict of str -> bytes), ``group``. ``key`` and ``key_bytes``
    are None for a message without a key (only under ``Input(null_key="process")``).
    """

    __slots__ = ("_core", "_effects", "_headers", "_message", "group", "key")

    def __init__(
        self, core: PartitionCore, message: InputMessage, key: str | None, effects: Effects
    ) -> None:
        self._core = core
        self._message = message
        self.key = key
        self.group = core.group
        self._headers: dict[str, bytes] | None = None
        # take over the core's record for this callback
        self._effects = effects
        effects.context = self
        effects.write = effects.emits = effects.deferred = None

    def _live(self, call: str) -> Effects:
        effects = self._effects
        if effects.context is not self:
            raise self._stale(call)
        return effects

    @staticmethod
    def _stale(call: str) -> ContextError:
        return ContextError(
            f"{call}: this Context's callback has returned; a Context acts only during its "
            f"callback (from other threads, use the callable of ctx.defer_commit())"
        )

    # -- message metadata ---------------------------------------------------------------------

    @property
    def key_bytes(self) -> bytes | None:
        """The message key as Kafka holds it (None for a message without a key)."""
        return self._message.key

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

    def _table_key(self, call: str) -> bytes:
        key = self._message.key
        if key is None:
            raise self._keyless(call)
        return key

    def _keyless(self, call: str) -> ContextError:
        m = self._message
        return ContextError(
            f"{call}: the message {m.topic}[{m.partition}]@{m.offset} has no key, so it has "
            f"no table value (a value stored under no key would sit in a partition no "
            f"reader looks in); give the message a key, or handle keyless messages without "
            f"the table"
        )

    def value(self) -> Any:
        """The group table's value for this message's key (None if absent).

        Reflects this callback's own ``set_value``/``delete`` and every earlier message.
        """
        core = self._core
        codec = core._table_codec
        if codec is None:
            codec = core.table_codec("ctx.value()")  # raises: the group has no table
        key = self._message.key
        if key is None:
            raise self._keyless("ctx.value()")
        effects = self._effects
        if effects.context is not self:
            raise self._stale("ctx.value()")
        write = effects.write
        raw = core.read_own(key) if write is None else write.value
        return None if raw is None else codec.decode(raw)

    def set_value(self, value: Any, headers: Mapping[str, str | bytes] | None = None) -> None:
        """Store ``value`` for this message's key in the group table (and its changelog).

        ``headers`` go on the changelog record, over the processor's default headers. Only the
        last write of a key in a batch reaches the changelog, with its own headers.
        """
        core = self._core
        codec = core._table_codec
        if codec is None:
            codec = core.table_codec("ctx.set_value()")  # raises: the group has no table
        key = self._message.key
        if key is None:
            raise self._keyless("ctx.set_value()")
        if value is None:
            raise ContextError(
                "ctx.set_value(None): a table value cannot be None; use ctx.delete() to remove "
                "the key"
            )
        data = codec.encode(value)
        effects = self._effects
        if effects.context is not self:
            raise self._stale("ctx.set_value()")
        pairs = core.outgoing_headers(headers) if headers or core.default_headers else None
        effects.write = _record(TableWrite, (key, data, pairs))

    def delete(self, headers: Mapping[str, str | bytes] | None = None) -> None:
        """Remove this message's key from the group table (a tombstone in the changelog).

        ``headers`` go on the tombstone, over the processor's default headers.
        """
        self._core.table_codec("ctx.delete()")
        key = self._table_key("ctx.delete()")
        effects = self._live("ctx.delete()")
        effects.write = _record(TableWrite, (key, None, self._core.outgoing_headers(headers)))

    # -- streams ------------------------------------------------------------------------------

    def emit(
        self,
        topic: str,
        key: str | bytes | None,
        value: Any,
        headers: Mapping[str, str | bytes] | None = None,
    ) -> None:
        """Produce ``value`` (None = tombstone) to the Output ``topic``, partitioned by ``key``.

        ``key`` is str (encoded losslessly, so ``ctx.key`` passes any key on unchanged), bytes,
        or None for a message without a key (the producer picks its partition).
        ``headers`` are added over the processor's default headers.
        """
        codec = self._core.output_codec(topic)
        self._append(topic, key, value, codec, headers, "ctx.emit()")

    def loopback(
        self, key: str | bytes, value: Any, headers: Mapping[str, str | bytes] | None = None
    ) -> None:
        """Send ``value`` to the group's loop topic; the Loop callback gets it for ``key``.

        ``key`` is str or bytes, as for :meth:`emit`, and required: the loop is keyed.
        ``headers`` are added over the processor's default headers.
        """
        topic, codec = self._core.loop_edge()
        if key is None:
            raise ContextError(
                "ctx.loopback(None, ...): the loop topic is keyed (the Loop callback reads and "
                "writes the table by key); pass a key"
            )
        self._append(topic, key, value, codec, headers, "ctx.loopback()")

    def _append(
        self,
        topic: str,
        key: str | bytes | None,
        value: Any,
        codec: Any,
        headers: Mapping[str, str | bytes] | None,
        call: str,
    ) -> None:
        kb = None if key is None else _key(key, call)
        data = None if value is None else codec.encode(value)
        hdrs = self._core.outgoing_headers(headers)
        effects = self._live(call)
        if effects.emits is None:
            effects.emits = []
        effects.emits.append(OutgoingMessage(topic, kb, data, hdrs))

    # -- other tables -------------------------------------------------------------------------

    def join(self, table: str) -> Any:
        """The value of this message's key in the joined (co-partitioned) ``table``."""
        return self._core.read_join(table, self._table_key(f"ctx.join({table!r})"))

    def lookup(self, table: str, key: str | bytes) -> Any:
        """The value of ``key`` (str or bytes, as for :meth:`emit`) in the lookup ``table``."""
        return self._core.read_lookup(table, _key(key, f"ctx.lookup({table!r}, ...)"))

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
        effects = self._live("ctx.defer_commit()")
        if effects.deferred is None:
            effects.deferred = []
        effects.deferred.append(deferred)
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


def _key(key: str | bytes, call: str) -> bytes:
    try:
        return encode_key(key, call)
    except TypeError as exc:
        raise ContextError(str(exc)) from None
