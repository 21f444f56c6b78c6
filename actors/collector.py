"""The cyclic garbage collector of an actor's process, set for batches of messages.

An actor's process is goka-ray's own: Ray starts it for the actor and ends it with the actor.
CPython's cyclic collector runs a young-generation collection every 700 net allocations of
tracked objects, and every so often a full one over every object of the process. In a
partition actor that is costly twice over:
  * a batch holds two tracked objects per message until it is published (librdkafka's message
    and goka-ray's ``InputMessage``; 40,000 with the default ``batch_size`` of 20,000), so a
    batch of messages triggered about 60 collections, each walking the batch's live objects;
  * a full collection walks everything the process imported (Ray, its gRPC and protobuf
    modules, goka-ray: about 110,000 objects), about 0.2 s each.
Measured with ``gc.callbacks`` on 1,000,000 clicks over 4 partition actors (2 busy cores):
1.8-2.2 s went by inside collections in each actor, which used 4.3-5.5 s of CPU in all.

:func:`settle_collector` (called once an actor is built):
  * freezes what exists then (``gc.freeze``): modules, the actor and its set-up are moved to
    the permanent generation, which collections skip; they live as long as the process does;
  * raises the young generation's threshold to :data:`YOUNG_THRESHOLD`, well above what a
    default batch holds alive, so collections run for garbage cycles (which they still
    collect), not because a batch is in flight. Cyclic garbage of callbacks then waits for
    at most that many allocations.

Invariant: only actor processes call this (never a driver, a notebook or a task: those
processes are the user's); calling it again only freezes what was made since.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "settle_collector"]

#: net allocations of tracked objects between two young-generation collections (CPython: 700)
YOUNG_THRESHOLD = 100_000


def settle_collector() -> None:
    """Freeze the objects made so far and collect young objects less often (see module)."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
