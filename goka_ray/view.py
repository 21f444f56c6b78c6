"""View: eventually consistent reads of a table from anywhere in the Ray cluster.

    view = View("kafka:9092", table("clicks"), codecs.Int())
    view.start(); view.wait_ready(60)
    view.get("alice")

View actors are named (``goka-ray/view/<table>/<i>-of-<n>``), so a second View of the same
table, in a notebook, a Ray task or another driver, attaches to the running actors.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from goka_ray.assignment import plan_actors
from goka_ray.codecs import Codec, as_codec
from goka_ray.config import Config
from goka_ray.errors import GokaRayError, TopicError
from goka_ray.partitioner import MURMUR2, Partitioner
from goka_ray.status import ViewStatus

__all__ = ["View"]


def view_actor_name(table: str, index: int, replicas: int) -> str:
    return f"goka-ray/view/{table}/{index}-of-{replicas}"


class View:
    """A read-only, eventually consistent view of a table, served by view actors."""

    def __init__(
        self,
        brokers: str | None,
        table: str,
        codec: Codec,
        config: Config | Mapping[str, Any] | str | Path | None = None,
        *,
        partitioner: Partitioner = MURMUR2,
    ) -> None:
        self.config = Config.load(config)
        self.brokers: str = self.config.resolve_brokers(brokers)
        self.table = table
        self.codec = as_codec(codec, f"View({table!r})")
        self.partitioner = partitioner
        self._actors: list[Any] = []
        self._owner: list[int] = []  # partition -> index into _actors

    def start(self) -> View:
        """Create the view actors, or attach to them if they run already."""
        import ray

        from actors.view import ViewActor, ViewSpec
        from goka_ray.kafka import TopicManager
        from goka_ray.runtime import ensure_ray

        ensure_ray(self.config.namespace)
        with TopicManager(self.brokers) as topics:
            partitions = topics.partitions(self.table)
        if partitions is None:
            raise TopicError(
                f"table topic {self.table!r} does not exist at {self.brokers}; start the group "
                f"that owns it first (or create it)"
            )
        cfg = self.config.view(self.table)
        plan = plan_actors(partitions, actors=cfg.replicas)
        spec = ViewSpec(self.brokers, self.table, self.config.consumer_config())
        actors = []
        owner = [0] * partitions
        for i, parts in enumerate(plan):
            name = view_actor_name(self.table, i, len(plan))
            actors.append(
                ray.remote(ViewActor)
                .options(
                    name=name,
                    namespace=self.config.namespace,
                    get_if_exists=True,
                    lifetime="detached",
                    max_restarts=-1,
                    max_task_retries=-1,  # reads are idempotent
                    max_concurrency=8,
                    num_cpus=cfg.num_cpus,
                )
                .remote(spec, parts, name)
            )
            for p in parts:
                owner[p] = i
        self._actors, self._owner = actors, owner
        return self

    def _require(self) -> list[Any]:
        if not self._actors:
            raise GokaRayError(f"View({self.table!r}) is not started; call start() first")
        return self._actors

    def status(self) -> list[ViewStatus]:
        import ray

        return list(ray.get([a.status.remote() for a in self._require()], timeout=30))

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until every view actor has read its partitions to the end once."""
        deadline = time.monotonic() + timeout
        while True:
            states = [s.state for s in self.status()]
            if all(s == "running" for s in states):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"view of {self.table} not ready after {timeout}s: {states}")
            time.sleep(0.1)

    # -- reads --------------------------------------------------------------------------------

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Values of many keys with one call per view actor (None where absent)."""
        import ray

        actors = self._require()
        keys = list(keys)
        by_actor: dict[int, list[tuple[int, bytes]]] = {}
        order: dict[int, list[str]] = {}
        n = len(self._owner)
        for key in keys:
            kb = key.encode()
            p = self.partitioner.partition(kb, n)
            i = self._owner[p]
            by_actor.setdefault(i, []).append((p, kb))
            order.setdefault(i, []).append(key)
        refs = {i: actors[i].get.remote(pk) for i, pk in by_actor.items()}
        out: dict[str, Any] = {}
        for i, ref in refs.items():
            for key, raw in zip(order[i], ray.get(ref, timeout=60), strict=True):
                out[key] = None if raw is None else self.codec.decode(raw)
        return out

    def get(self, key: str) -> Any:
        """The value of ``key`` (None if absent)."""
        return self.get_many([key])[key]

    def has(self, key: str) -> bool:
        return self.get(key) is not None

    def items(self) -> Iterator[tuple[str, Any]]:
        """Every (key, value), ordered by key across all partitions."""
        import ray

        runs = ray.get([a.items.remote() for a in self._require()], timeout=120)
        for kb, raw in heapq.merge(*runs, key=lambda kv: kv[0]):
            yield kb.decode(), self.codec.decode(raw)

    def __len__(self) -> int:
        import ray

        return sum(ray.get([a.count.remote() for a in self._require()], timeout=60))

    def stop(self) -> None:
        """Remove the view actors (for every process attached to them)."""
        import ray

        for a in self._actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:
                pass
        self._actors = []

    def __reduce__(self) -> tuple[Any, ...]:
        # inside a Ray task, a View arrives attached to the same actors
        return (
            _rebuild_view,
            (
                self.brokers,
                self.table,
                self.codec,
                self.config,
                self.partitioner,
                self._actors,
                self._owner,
            ),
        )


def _rebuild_view(
    brokers: str,
    table: str,
    codec: Codec,
    config: Config,
    partitioner: Partitioner,
    actors: list[Any],
    owner: list[int],
) -> View:
    v = View(brokers, table, codec, config, partitioner=partitioner)
    v._actors, v._owner = actors, owner
    return v
