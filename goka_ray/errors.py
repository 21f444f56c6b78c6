"""One exception hierarchy for goka-ray; every message says what to do about it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


def readable(text: object) -> str:
    """``str(text)`` that every UTF-8 stream can write: lone surrogates (a key that is not
    UTF-8, decoded with surrogateescape, quoted in a callback's error) become ``\\udcXX``.

    For error messages, log lines and headers that may quote a key or a user's text.
    """
    shown = str(text)
    try:
        shown.encode("utf-8")
    except UnicodeEncodeError:
        return shown.encode("utf-8", "backslashreplace").decode("utf-8")
    return shown


class GokaRayError(Exception):
    """Base class of every error goka-ray raises on purpose."""


class GraphError(GokaRayError):
    """A group graph is malformed (raised when it is defined, before anything runs)."""


class CodecError(GokaRayError):
    """A value could not be encoded or decoded by its codec."""


class ContextError(GokaRayError):
    """A callback used its Context in a way the group graph does not allow."""


class StorageError(GokaRayError):
    """The local table storage could not be opened, read or written.

    Never a callback failure: a storage error inside ``ctx.value()``, ``ctx.join()`` or
    ``ctx.lookup()`` stops the batch whatever the input's ``on_error`` policy says.
    """


class LocalCopyDamaged(StorageError):
    """A local copy of a table (a LevelDB directory) is damaged and cannot be trusted.

    Missing or corrupt files, a copy that lost its generation marker, or an I/O error while
    reading or writing it. A local copy is a cache of its changelog: a partition runner
    moves the copy aside and rebuilds it from the changelog by itself; outside a runner,
    delete ``path`` (or move it away) and let the group recover it. ``reason`` says what
    was found.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"the local table copy at {path} is damaged: {reason}. It is a cache of the "
            f"changelog: move it aside or delete it, and the group rebuilds it from the "
            f"changelog"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.reason))


class StorageLocked(StorageError):
    """Another process (or another copy in this one) has this LevelDB directory open.

    LevelDB allows one opener per directory; the partition's previous owner on this node
    may still be closing it. Wait for it to stop, or use another directory.
    """


class ConfigError(GokaRayError):
    """Configuration is missing, invalid, or names something that does not exist."""


class BrokerError(GokaRayError):
    """The Kafka broker could not be reached or refused a request."""


class TopicError(GokaRayError):
    """A topic is missing or its partition count does not fit the group."""


class CallbackFailed(GokaRayError):
    """Raised by ``Context.fail()`` to stop processing of the current message."""


class ProcessingError(GokaRayError):
    """A callback raised or called ``ctx.fail()``; the partition stops.

    Carries the coordinates of the message that failed, and the original exception as
    ``__cause__`` and ``error``.
    """

    def __init__(
        self,
        group: str,
        topic: str,
        partition: int,
        offset: int,
        key: str | None,
        error: BaseException,
    ) -> None:
        self.group = group
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.error = error
        super().__init__(
            f"group {group!r} failed on {topic}[{partition}]@{offset} key={key!r}: "
            f"{type(error).__name__}: {readable(error)}"
        )
        self.__cause__ = error

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the coordinates when the error crosses process boundaries (Ray, pickling).
        return (
            type(self),
            (self.group, self.topic, self.partition, self.offset, self.key, self.error),
        )


class FencedError(GokaRayError):
    """This owner of a partition was replaced; it must stop without writing anything more."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` naming the closest of ``known`` (difflib), else ``""``.

    For error messages about a misspelled name (a group, a topic, a setting).
    """
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


class RecordRejected(GokaRayError):
    """A record goka-ray was to produce (a changelog record, an emit, a loopback, a dead
    letter) that the producer or the broker refuses: too large, an unknown or invalid topic,
    not authorised, ...

    It goes through the ``on_error`` policy of the input message that made the record, like a
    raising callback; under ``fail`` it is the ``error`` of the ProcessingError that names
    that message. ``topic`` is the output topic, ``key`` the record's key (text), ``size`` and
    ``limit`` the record's size and the limit it broke in bytes (None where unknown),
    ``reason`` Kafka's error name (e.g. ``MSG_SIZE_TOO_LARGE``).
    """

    def __init__(
        self,
        message: str,
        *,
        topic: str,
        key: str | None = None,
        size: int | None = None,
        limit: int | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.topic = topic
        self.key = key
        self.size = size
        self.limit = limit
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        # keyword-only fields survive pickling (Ray, multiprocessing)
        return (
            _record_rejected,
            (str(self), self.topic, self.key, self.size, self.limit, self.reason),
        )


def _record_rejected(
    message: str,
    topic: str,
    key: str | None,
    size: int | None,
    limit: int | None,
    reason: str | None,
) -> RecordRejected:
    return RecordRejected(message, topic=topic, key=key, size=size, limit=limit, reason=reason)


class UnavailableError(GokaRayError):
    """A goka-ray actor (a group's coordinator) did not answer because Ray is starting it
    again (its process or node died). The group itself goes on: its partition actors keep
    processing and the restarted coordinator adopts them. Raised by a driver's call once its
    timeout has passed, or at once for a call that changes the group (scale, upgrade, visit),
    which Ray may or may not have carried out: check the status before repeating it."""


class InsufficientResourcesError(GokaRayError):
    """The Ray cluster has not enough free resources for the actors a group would start.

    Raised by a start, a scale or an upgrade before anything moves; the message names the
    resource, the amount asked and the amount free, and what to do (ask less per actor, use
    fewer actors, free resources, add nodes, or ``on_insufficient_resources: wait``).
    """


class CodeChangedError(GokaRayError):
    """The group runs under this name with another graph or other code than the one given.

    Nothing was changed: the running group goes on with its code. ``changes`` lists what
    differs (e.g. ``"Input('clicks') callback changed"``); ``running`` and ``given`` are the
    two fingerprints (short). Upgrade it live (``Processor.upgrade(graph)``, ``goka-ray run
    --upgrade``) or stop it and start it again.
    """

    def __init__(
        self, message: str, *, running: str = "", given: str = "", changes: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message)
        self.running = running
        self.given = given
        self.changes = tuple(changes)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_code_changed, (str(self), self.running, self.given, self.changes))


def _code_changed(
    message: str, running: str, given: str, changes: tuple[str, ...]
) -> CodeChangedError:
    return CodeChangedError(message, running=running, given=given, changes=changes)


class UpgradeError(GokaRayError):
    """A rolling upgrade to a new graph cannot be done in place (e.g. it changes the table's
    codec, drops the table, or names topics whose partition counts differ); nothing changed."""
