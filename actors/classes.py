"""Ray actor classes, made once per process.

``ray.remote(cls)`` builds a new ActorClass, and Ray exports each ActorClass object to the
cluster on its first ``.remote()`` of a job: it pickles the class and hashes its disassembled
code (``dis``), about 0.2 s of CPU for the partition actor. Making the class again for every
actor a coordinator spawns repeated that, one after another, on the path of every start,
scale, failover and upgrade. Ray exports a kept class again by itself after a new
``ray.init``.

Invariant: one ActorClass per Python class and process (the cache is never cleared).
"""

from __future__ import annotations

import functools
from typing import Any

import ray

__all__ = ["remote_class"]


@functools.cache
def remote_class(cls: type) -> Any:
    """``ray.remote(cls)``, made once per process; set per-actor options with ``.options``."""
    return ray.remote(cls)
