"""One exception hierarchy for goka-ray; every message says what to do about it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


class GokaRayError(Exception):
    """Base class of every error goka-ray raises on purpose."""


class GraphError(GokaRayError):
    """A group graph is malformed (raised when it is defined, before anything runs)."""


class CodecError(GokaRayError):
    """A value could not be encoded or decoded by its codec."""


class ContextError(GokaRayError):
    """A callback used its Context in a way the group graph does not allow."""


class StorageError(GokaRayError):
    """The local table storage could not be opened, read or written."""


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
            f"{type(error).__name__}: {error}"
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
