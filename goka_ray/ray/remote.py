"""Results of actor calls, as the driver hands them to its caller: without Ray's wrapping.

An exception raised inside an actor reaches ``ray.get`` as a ``RayTaskError`` whose text is
the remote traceback (with Ray's own frames and terminal colour codes) in front of the useful
line. Processor and View call actors through ``get`` here, which re-raises the exception the
actor raised: a goka-ray error exactly as it was raised (type, message, attributes such as a
ProcessingError's topic/partition/offset/key, and its ``__cause__``); any other exception
with the remote traceback attached as a note (Python shows notes under the traceback). The
remote traceback is also logged at DEBUG on ``goka_ray.ray.remote``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from goka_ray.errors import GokaRayError

__all__ = ["get", "strip_ansi", "unwrap"]

logger = logging.getLogger(__name__)

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour and cursor codes."""
    return _ANSI.sub("", text)


def unwrap(error: BaseException) -> BaseException:
    """The exception an actor raised, for a ``RayTaskError`` (any other error unchanged)."""
    from ray.exceptions import RayTaskError

    if not isinstance(error, RayTaskError):
        return error
    cause = error.cause
    if isinstance(cause, RayTaskError):
        return unwrap(cause)
    if not isinstance(cause, BaseException):
        return error
    remote = strip_ansi(str(error))
    logger.debug("raised in a Ray actor:\n%s", remote)
    if not isinstance(cause, GokaRayError):
        cause.add_note(f"raised in a Ray actor; the remote traceback:\n{remote}")
    cause.__suppress_context__ = True  # never show the Ray wrapper; __cause__ is kept
    return cause


def get(refs: Any, timeout: float | None = None) -> Any:
    """``ray.get(refs, timeout)``, raising what the actor raised (see the module doc)."""
    import ray
    from ray.exceptions import RayTaskError

    try:
        return ray.get(refs, timeout=timeout)
    except RayTaskError as exc:
        error = unwrap(exc)
    raise error  # outside the handler: the Ray wrapper is not chained as the context
