"""View: eventually consistent reads of a table from anywhere in the Ray cluster.

    view = View("kafka:9092", table("clicks"), codecs.Int())
    view.start(); view.wait_for("running", 60)
    view.get("alice")
    for key, value in view.iterator("a", "m"):  # ordered, fetched page by page
        ...
    watch = view.observe(lambda old, new: print(old, "->", new))
    ...
    watch.stop()

View actors are named (``goka-ray/view/<table>/<i>-of-<n>``), so a second View of the same
table, in a notebook, a Ray task or another driver, attaches to the running actors. Each read
is a Ray call (about a millisecond); a service that reads per request keeps the copy in its
own process instead, with :class:`~goka_ray.kafka.local_view.LocalView` (same read API).

States (least advanced first): ``idle`` (not started), ``connecting`` (no broker contact yet,
or contact lost: reads are served from the last copy while the actors reconnect),
``recovering`` (reading the changelog to its end), ``running`` (caught up, following it).
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from operator import itemgetter
from pathlib import Path
from typing import Any, TypeVar

from goka_ray.control.assignment import plan_actors
from goka_ray.control.names import view_actor_name
from goka_ray.core.codecs import Codec, as_codec
from goka_ray.core.config import Config
from goka_ray.core.graph import check_update_callback
from goka_ray.core.keys import decode_key, encode_key
from goka_ray.core.partitioner import MURMUR2, Partitioner, partitions_of
from goka_ray.core.tables import UpdateCallback
from goka_ray.core.views import STATES, TableReads, ViewObserver, ViewStatus, state_rank
from goka_ray.errors import GokaRayError, InsufficientResourcesError, TopicError
from goka_ray.ray import remote

__all__ = ["View", "ViewObserver"]

logger = logging.getLogger(__name__)

_RANK = {state: state_rank(state) for state in STATES}
PAGE_SIZE = 1000  # pairs per page that View.iterator fetches from a view actor
PAGE_BYTES = 4 << 20  # and a page stops growing at about this many bytes
K = TypeVar("K", bound=str | bytes)  # a key as the caller gives it


class View(TableReads):
    """A read-only, eventually consistent view of a table, served by view actors."""

    def __init__(
        self,
        brokers: str | None,
        table: str,
        codec: Codec,
        config: Config | Mapping[str, Any] | str | Path | None = None,
        *,
        partitioner: Partitioner = MURMUR2,
        update: UpdateCallback | None = None,
    ) -> None:
        """``update(ctx, storage, key, value)``, if given, replaces the default store/delete of
        every changelog record the view actors apply (filter or transform what the view holds,
        as for ``Persist(update=)``); it takes effect when ``start()`` creates the actors, not
        when it attaches to running ones."""
        if update is not None:
            check_update_callback(update, f"View({table!r})")
        self.update = update
        self.config = Config.load(config)
        self.brokers: str = self.config.resolve_brokers(brokers)
        self.table = table
        self.codec = as_codec(codec, f"View({table!r})")
        self.partitioner = partitioner
        self._actors: list[Any] = []
        self._owner: list[int] = []  # partition -> index into _actors

    def start(self) -> View:
        """Create the view actors, or attach to them if they run already."""
        from goka_ray.actors.classes import remote_class
        from goka_ray.actors.view import ViewActor, ViewSpec
        from goka_ray.kafka.clients import check_client_settings
        from goka_ray.kafka.topics import TopicManager
        from goka_ray.ray.cluster import ensure_ray

        check_client_settings(self.config.consumer_config())
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
        self._admit(len(plan))
        spec = ViewSpec(self.brokers, self.table, self.config.consumer_config(), self.update)
        actors = []
        owner = [0] * partitions
        for i, parts in enumerate(plan):
            name = view_actor_name(self.table, i, len(plan))
            actors.append(
                remote_class(ViewActor)
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

    def _admit(self, replicas: int) -> None:
        """InsufficientResourcesError if the view actors not running yet do not fit the
        cluster's free resources (unless the view's on_insufficient_resources is wait)."""
        import ray

        from goka_ray.actors.group_actors import cluster_capacity
        from goka_ray.control.actions import ActorResources
        from goka_ray.control.admission import explain_view, wait_for_fit

        cfg = self.config.view(self.table)
        names = ray.util.list_named_actors(all_namespaces=True)
        running = {n["name"] for n in names if n.get("namespace") == self.config.namespace}
        new = [
            i for i in range(replicas) if view_actor_name(self.table, i, replicas) not in running
        ]
        demand = [ActorResources(cfg.num_cpus)] * len(new)
        short = wait_for_fit(demand, cluster_capacity, grace=5.0)
        if short is None:
            return
        message = explain_view(self.table, short)
        if cfg.on_insufficient_resources == "wait":
            logger.warning("%s; waiting for them (on_insufficient_resources: wait)", message)
            return
        raise InsufficientResourcesError(message)

    def _require(self) -> list[Any]:
        if not self._actors:
            raise GokaRayError(f"View({self.table!r}) is not started; call start() first")
        return self._actors

    def status(self) -> list[ViewStatus]:
        """The status of every view actor (state, keys, offsets, lag, last connection error)."""

        return list(remote.get([a.status.remote() for a in self._require()], timeout=30))

    def _actor_states(self, timeout: float = 5.0) -> list[str]:
        """Each actor's state; ``connecting`` if it does not answer (restarting) within
        ``timeout``, ``idle`` if it is gone for good (stopped)."""
        import ray
        from ray.exceptions import ActorDiedError, GetTimeoutError, RayActorError

        refs = [a.ping.remote() for a in self._actors]
        deadline = time.monotonic() + timeout
        states = []
        for ref in refs:
            try:
                states.append(str(ray.get(ref, timeout=max(0.01, deadline - time.monotonic()))))
            except ActorDiedError:
                states.append("idle")
            except (GetTimeoutError, RayActorError):
                states.append("connecting")
        return states

    @property
    def state(self) -> str:
        """The least advanced state of the view's actors: idle | connecting | recovering | running.

        ``idle`` before ``start()`` (or after ``stop()``); an actor that does not answer within
        a few seconds (being restarted) counts as ``connecting``.
        """
        if not self._actors:
            return "idle"
        return min(self._actor_states(), key=_RANK.__getitem__)

    def wait_for(self, state: str = "running", timeout: float = 60.0) -> str:
        """Block until the view is in ``state`` or a more advanced one; returns the state reached.

        Raises TimeoutError after ``timeout`` seconds, naming each actor's state and error.
        """
        if state not in _RANK:
            raise GokaRayError(f"unknown view state {state!r}; use one of {', '.join(STATES)}")
        if not self._actors and state != "idle":
            raise GokaRayError(f"View({self.table!r}) is not started; call start() first")
        deadline = time.monotonic() + timeout
        while True:
            current = self.state
            if _RANK[current] >= _RANK[state]:
                return current
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        details = "; ".join(
            f"{s.actor_name}: {s.state}" + (f" ({s.error})" if s.error else "")
            for s in self.status()
        )
        raise TimeoutError(
            f"view of {self.table} not {state} after {timeout}s: {details}. Check that the "
            f"brokers at {self.brokers} are reachable and the table topic exists; the actors "
            f"keep retrying"
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until every view actor has read its partitions to the end once."""
        self.wait_for("running", timeout)

    # -- reads --------------------------------------------------------------------------------

    def get_many(self, keys: Iterable[K]) -> dict[K, Any]:
        """Values of many keys with one call per view actor (None where absent), keyed as
        given. A key is str (encoded losslessly, see :mod:`goka_ray.core.keys`) or bytes."""
        actors = self._require()
        keys = list(keys)
        by_actor: dict[int, list[tuple[int, bytes]]] = {}
        order: dict[int, list[K]] = {}
        encoded = [_key(key, "View.get") for key in keys]
        owner = self._owner
        for key, kb, p in zip(
            keys, encoded, partitions_of(self.partitioner, encoded, len(owner)), strict=True
        ):
            i = owner[p]
            by_actor.setdefault(i, []).append((p, kb))
            order.setdefault(i, []).append(key)
        refs = {i: actors[i].get.remote(pk) for i, pk in by_actor.items()}
        out: dict[K, Any] = {}
        for i, ref in refs.items():
            for key, raw in zip(order[i], remote.get(ref, timeout=60), strict=True):
                out[key] = None if raw is None else self.codec.decode(raw)
        return out

    def get(self, key: str | bytes) -> Any:
        """The value of ``key`` (str or bytes, as :meth:`get_many`; None if absent)."""
        return self.get_many([key])[key]

    def iterator(
        self,
        start: str | bytes | None = None,
        end: str | bytes | None = None,
        *,
        page_size: int = PAGE_SIZE,
    ) -> Iterator[tuple[str, Any]]:
        """(key, value) pairs with ``start <= key < end``, ordered by key bytes.

        Keys come as lossless text (:func:`~goka_ray.core.keys.decode_key`): a key that is not
        UTF-8 reads with lone surrogates and ``get``, ``encode_key`` or a Kafka client given it
        back reach the same bytes. ``start`` and ``end`` are str or bytes.

        Lazy: each view actor is asked for pages of ``page_size`` pairs (and at most about
        4 MiB), the next page while this one is consumed, so memory stays bounded however
        large the table. Not a snapshot: a key written during the iteration may or may not be
        seen, but each key comes at most once and in order.
        """

        if page_size < 1:
            raise GokaRayError(f"iterator(page_size={page_size}): the page size must be >= 1")
        actors = self._require()
        lo = None if start is None else _key(start, "View.iterator")
        hi = None if end is None else _key(end, "View.iterator")
        if lo is not None and hi is not None and lo >= hi:
            return
        first = [a.page.remote(lo, hi, page_size, PAGE_BYTES) for a in actors]
        runs = [_pages(a, ref, hi, page_size) for a, ref in zip(actors, first, strict=True)]
        for kb, raw in heapq.merge(*runs, key=itemgetter(0)):
            yield decode_key(kb), self.codec.decode(raw)

    def __len__(self) -> int:
        """The number of keys in the table (one call per view actor)."""

        return sum(remote.get([a.count.remote() for a in self._require()], timeout=60))

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


def _key(key: str | bytes, call: str) -> bytes:
    try:
        return encode_key(key, call)
    except TypeError as exc:
        raise GokaRayError(str(exc)) from None


def _pages(actor: Any, ref: Any, end: bytes | None, limit: int) -> Iterator[tuple[bytes, bytes]]:
    """The pairs of one view actor, page by page; the next page is requested ahead."""
    while True:
        pairs, more = remote.get(ref, timeout=120)
        if more:
            # the least key after the last one: continue right behind it
            ref = actor.page.remote(pairs[-1][0] + b"\x00", end, limit, PAGE_BYTES)
        yield from pairs
        if not more:
            return


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
