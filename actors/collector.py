"""The cyclic garbage collector of an actor's process: what start-up made is frozen.

An actor's process is goka-ray's own: Ray starts it for the actor and ends it with the actor.
CPython's cyclic collector runs a young-generation collection every 700 net allocations of
tracked objects, and every so often a full one over every object of the process. In a
partition actor the full ones were the costly part: each walks everything the process
imported (Ray, its gRPC and protobuf modules, goka-ray: about 110,000 objects), about 0.2 s
each. Measured with ``gc.callbacks`` on 1,000,000 clicks over 4 partition actors (2 busy
cores): 1.8-2.2 s went by inside collections in each actor (which used 4.3-5.5 s of CPU in
all); with what start-up made frozen, 0.6-0.75 s.

:func:`settle_collector` (called once an actor is built) freezes what exists then
(``gc.freeze``): modules, the actor and its set-up move to the permanent generation, which
collections skip; they live as long as the process does. The thresholds stay CPython's: a
higher young threshold saved a little more CPU (a batch in flight holds two tracked objects
per message, which young collections walk), but a callback that makes a reference cycle per
message then had up to that many garbage cycles held at once (100,000 cycles holding 8 KB
each: 780-860 MB per actor against 200 MB).

Invariant: only actor processes call this (never a driver, a notebook or a task: those
processes are the user's); calling it again only freezes what was made since.
"""

from __future__ import annotations

import gc

__all__ = ["settle_collector"]


def settle_collector() -> None:
    """Freeze the objects made so far, so that collections no longer walk them (see module)."""
    gc.freeze()
