"""Results of actor calls, as the driver hands them to its caller: without Ray's wrapping.

An exception raised inside an actor reaches ``ray.get`` as a ``RayTaskError`` whose text is
the remote traceback (with Ray's own frames and terminal colour codes) in front of the useful
line. Processor and View call actors through ``get`` here, which re-raises the exception the
actor raised: a goka-ray error exactly as it was raised (type, message, attributes such as a
ProcessingError's topic/partition/offset/key, and its ``__cause__``); any other exception
with the remote traceback attached as a note (Python shows notes under the traceback). The
remote traceback is also logged at DEBUG on ``goka_ray.ray.remote``.

``call`` also covers an actor that Ray is restarting (Ray raises ``ActorUnavailableError``
while it starts the process again, for a coordinator about 2-4 s): a call that may be
repeated is asked again until its timeout, any other raises :class:`UnavailableError` at once
(Ray may or may not have carried it out).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from goka_ray.errors import GokaRayError, UnavailableError

__all__ = ["call", "get", "strip_ansi", "unwrap"]

#: seconds between two tries of a repeatable call to an actor Ray is restarting
RETRY_INTERVAL = 0.25

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


def call(
    method: Any,
    *args: Any,
    timeout: float | None,
    repeatable: bool = True,
    what: str = "the actor",
) -> Any:
    """``get(method.remote(*args), timeout)`` (``method``: an actor handle's method), raising
    what the actor raised. While Ray restarts the actor, a ``repeatable`` call (one that
    reads, or that does the same when done twice) is sent again until ``timeout`` seconds
    have passed; then, or at once for any other call, UnavailableError names ``what`` and
    says what to do."""
    from ray.exceptions import ActorUnavailableError

    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = None if deadline is None else max(0.1, deadline - time.monotonic())
        try:
            return get(method.remote(*args), timeout=left)
        except ActorUnavailableError:
            if repeatable and (deadline is None or time.monotonic() + RETRY_INTERVAL < deadline):
                time.sleep(RETRY_INTERVAL)
                continue
        break
    if repeatable:
        raise UnavailableError(
            f"{what} did not answer within {timeout:g}s: Ray is starting it again (its process "
            f"or node died). The group goes on meanwhile; try again in a few seconds"
        )
    raise UnavailableError(
        f"{what} was being started again by Ray (its process or node died) when it was "
        f"called, so the call may or may not have been carried out. Check the group's status "
        f"(`goka-ray status`), then repeat it if it is still needed"
    )
