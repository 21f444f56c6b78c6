"""The driver side: start, watch, scale and stop processor groups on a Ray cluster."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from goka_ray.control.status import Assignment, GroupStatus
from goka_ray.core.config import Config
from goka_ray.core.fingerprint import fingerprint
from goka_ray.core.graph import GroupGraph
from goka_ray.errors import CodeChangedError, ConfigError, GokaRayError, UnavailableError
from goka_ray.ray import remote
from goka_ray.ray.cluster import ensure_ray

if TYPE_CHECKING:
    from goka_ray.ray.view import View

__all__ = ["Processor"]

logger = logging.getLogger(__name__)


class Processor:
    """A processor group running as Ray actors (one coordinator, partition actors).

        p = Processor("kafka:9092", graph, config={"groups": {"clicks": {"actors": 2}}})
        p.start(); p.wait_ready(60)
        p.scale(actors=4)
        p.stop()

    ``start()`` attaches to the group if it already runs in the cluster (any driver) with
    the same graph and code (the same :mod:`fingerprint <goka_ray.core.fingerprint>`), and
    raises :class:`~goka_ray.errors.CodeChangedError` if it runs other code; ``upgrade(graph)``
    moves a running group to new code live.
    """

    def __init__(
        self,
        brokers: str | None,
        graph: GroupGraph,
        config: Config | Mapping[str, Any] | str | Path | None = None,
        *,
        on_rebalance: Callable[[Assignment], None] | None = None,
    ) -> None:
        """``on_rebalance`` runs inside the partition actors whenever one of them takes
        (``event="assigned"``) or gives up (``"revoked"``) a partition; it must be picklable."""
        self.on_rebalance = on_rebalance
        self.config = Config.load(config)
        self.brokers: str = self.config.resolve_brokers(brokers)
        unconfigured = self.config.unconfigured_group(graph.group)
        if unconfigured:
            logger.warning("%s", unconfigured)
        self.graph: GroupGraph | None = graph
        self.group = graph.group
        self._coordinator: Any = None

    @classmethod
    def attach(
        cls, group: str, *, namespace: str = "goka-ray", address: str | None = None
    ) -> Processor:
        """A handle on a group that already runs on the cluster (started by any driver).

        Status, scale, wait and stop work on it; it needs neither the graph nor the brokers.
        Raises NoClusterError or UnknownGroupError (listing the running groups).
        """

        from goka_ray.ray.cluster import connect, coordinator

        connect(namespace, address)
        handle = coordinator(group, namespace)
        info = remote.call(handle.describe, timeout=30, what=f"the coordinator of {group!r}")
        self = cls.__new__(cls)
        self.config = info.config
        self.brokers = info.brokers
        self.graph = None
        self.on_rebalance = None
        self.group = group
        self._coordinator = handle
        return self

    def view(self) -> View:
        """A View of this group's table (started, or attached to running view actors)."""

        from goka_ray.core.partitioner import partitioner_named
        from goka_ray.ray.view import View

        info = self._call("describe", timeout=30)
        if info.table is None:
            raise GokaRayError(f"group {self.group!r} has no table (no Persist edge) to view")
        partitioner = partitioner_named(self.config.group(self.group).partitioner)
        view = View(
            self.brokers, info.table, info.table_codec, self.config, partitioner=partitioner
        )
        return view.start()

    def _call(self, method: str, *args: Any, timeout: float | None, repeatable: bool = True) -> Any:
        """Call the coordinator's ``method`` (see :func:`goka_ray.ray.remote.call`: a
        ``repeatable`` call is sent again while Ray restarts the coordinator)."""
        return remote.call(
            getattr(self._handle(), method),
            *args,
            timeout=timeout,
            repeatable=repeatable,
            what=f"the coordinator of group {self.group!r}",
        )

    def _handle(self) -> Any:
        if self._coordinator is None:
            raise GokaRayError(f"processor {self.group!r} is not started; call start() first")
        return self._coordinator

    def start(self, timeout: float = 120.0) -> None:
        """Create (or attach to) the group's coordinator; returns once actors are placed.

        With ``create_topics: true`` in the group's config, missing input topics are created
        first (``TopicManager.ensure_inputs``). Raises what the coordinator raised: TopicError
        (missing or not co-partitioned topics), BrokerError, ConfigError.
        Also CodeChangedError (the running group is left as it is; this handle stays
        attached, so :meth:`upgrade` can follow) if the group runs with another graph or
        other code, and InsufficientResourcesError if its actors do not fit the cluster's
        free resources (naming what is missing).
        """

        from goka_ray.actors.classes import remote_class
        from goka_ray.actors.coordinator import GroupCoordinator, GroupSpec
        from goka_ray.control.names import coordinator_name
        from goka_ray.kafka.clients import check_client_settings
        from goka_ray.kafka.topics import TopicManager

        if self.graph is None:
            raise GokaRayError(
                f"processor {self.group!r} was attached, not defined here; it runs already"
            )
        check_client_settings(self.config.consumer_config(), self.config.producer_config())
        cfg = self.config.group(self.group)
        if cfg.create_topics:
            with TopicManager(self.brokers) as topics:
                topics.ensure_inputs(self.graph, cfg.partitions)
        ensure_ray(self.config.namespace)
        given = fingerprint(self.graph)
        spec = GroupSpec(
            self.brokers,
            self.graph,
            self.config,
            on_rebalance=self.on_rebalance,
            fingerprint=given,
        )
        self._coordinator = (
            remote_class(GroupCoordinator)
            .options(
                name=coordinator_name(self.group),
                namespace=self.config.namespace,
                get_if_exists=True,
                lifetime="detached",
                max_restarts=-1,
                max_task_retries=0,
                max_concurrency=64,
                **_coordinator_placement(self.config.group(self.group).coordinator_node),
            )
            .remote(spec)
        )
        try:
            partitions = self._call("start", given, timeout=timeout)  # attaches if it runs
        except (CodeChangedError, UnavailableError):
            raise  # the group runs on (with its code): keep the coordinator
        except GokaRayError:
            self._kill_coordinator()
            raise
        logger.info("group %s started on %d partitions", self.group, partitions)

    def status(self) -> GroupStatus:
        """State of every partition: state, node, actor, pid, offsets, lag, keys, restarts."""

        status: GroupStatus = self._call("status", timeout=30)
        return status

    def wait_ready(self, timeout: float = 120.0) -> GroupStatus:
        """Block until every partition is recovered and processing."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if status.state == "failed":
                self._raise_failure()
            if status.ready:
                return status
            if time.monotonic() > deadline:
                states = ", ".join(f"{p.partition} {p.state}" for p in status.partitions)
                why = f"; {status.waiting}" if status.waiting else ""
                raise TimeoutError(
                    f"group {self.group} not ready after {timeout:g}s; partitions: {states}{why}"
                )
            time.sleep(0.2)

    def scale(self, **changes: Any) -> bool:
        """Change the group's config live (``actors=4``, ``partitions_per_actor=2``,
        ``num_cpus=1``...): new owners recover first, then the old ones hand over."""

        moved: bool = self._call("scale", changes, timeout=60, repeatable=False)
        if moved:
            self.config = self.config.with_group(self.group, **changes)
        return moved

    def upgrade(self, graph: GroupGraph, *, wait: bool = True, timeout: float = 600.0) -> bool:
        """Move the running group to ``graph`` (new code, same group name) live: one actor
        at a time, a new actor running the new code recovers its partitions, the old one
        finishes its batch and commits, then the new one goes on from the committed offsets
        (the hand-over of a live scale: no message lost, none applied twice).

        Returns False if the group runs this code already. With ``wait``, blocks until every
        partition runs the new code (TimeoutError after ``timeout`` seconds). Raises
        UpgradeError (nothing changed) if the new graph changes the table's codec, adds or
        drops the table, or names topics with other partition counts, and
        InsufficientResourcesError if one more actor does not fit the cluster.
        """
        if graph.group != self.group:
            raise ConfigError(
                f"the graph is group {graph.group!r}, this processor {self.group!r}; an "
                "upgrade keeps the group's name"
            )
        given = fingerprint(graph)
        started: bool = self._call("upgrade", graph, given, timeout=120, repeatable=False)
        self.graph = graph
        if started and wait:
            self.wait_upgraded(given.short, timeout)
        return started

    def wait_upgraded(self, code: str, timeout: float = 600.0) -> GroupStatus:
        """Block until every partition runs code ``code`` (a fingerprint's ``short``)."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if status.state == "failed":
                self._raise_failure()
            done = status.ready and all(p.code == code for p in status.partitions)
            if status.state == "running" and done:
                return status
            if time.monotonic() > deadline:
                on = sum(p.code == code for p in status.partitions)
                raise TimeoutError(
                    f"group {self.group} not upgraded to code {code} within {timeout}s "
                    f"({on} of {len(status.partitions)} partitions run it; group {status.state})"
                )
            time.sleep(0.2)

    def wait_scaled(self, timeout: float = 120.0) -> GroupStatus:
        """Block until a scale has finished and every partition runs again."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if status.state == "failed":
                self._raise_failure()
            if status.state == "running" and status.ready:
                return status
            if time.monotonic() > deadline:
                states = ", ".join(
                    f"{p.partition} {p.state} (epoch {p.epoch})" for p in status.partitions
                )
                why = f"; {status.waiting}" if status.waiting else ""
                raise TimeoutError(
                    f"group {self.group} did not finish scaling within {timeout:g}s "
                    f"(group {status.state}; partitions {states}{why})"
                )
            time.sleep(0.2)

    def wait(self, timeout: float | None = None) -> None:
        """Block until the group stops; re-raise its failure (with the message coordinates)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while deadline is None or time.monotonic() < deadline:
            status = self.status()
            if status.state == "failed":
                self._raise_failure()
            if status.state == "stopped":
                return
            time.sleep(0.3)
        raise TimeoutError(f"group {self.group} still running after {timeout}s")

    def visit_all(self, name: str, meta: Any = None, timeout: float | None = None) -> int:
        """Run the ``Visitor(name, ...)`` callback as ``callback(ctx, meta)`` for every key of
        every partition's table, inside each partition's processing loop (serialised with its
        messages, with full Context write access). Returns the number of keys visited.

        A stop or a move of a partition aborts its part of the visit with an error; keys it
        had visited stay visited (their changes are committed like any batch).
        """

        visited: int = self._call(
            "visit_all",
            name,
            meta,
            timeout,
            timeout=None if timeout is None else timeout + 60,
            repeatable=False,
        )
        return visited

    def _raise_failure(self) -> None:

        error = self._call("failure", timeout=30)
        if isinstance(error, BaseException):
            raise error
        raise GokaRayError(f"group {self.group} failed")

    def stop(self) -> None:
        """Stop the group: partition actors commit and close, then every actor is removed."""

        if self._coordinator is None:
            return
        try:
            self._call("stop", timeout=120)
        finally:
            self._kill_coordinator()

    def _kill_coordinator(self) -> None:
        import ray

        if self._coordinator is not None:
            ray.kill(self._coordinator, no_restart=True)
            self._coordinator = None


def _coordinator_placement(node: str) -> dict[str, Any]:
    """Ray options that place a group's coordinator as ``coordinator_node`` says: ``head``
    (the node the cluster does not outlive, as Ray Serve places its controller), ``any``, or
    a node id (soft: when that node is gone, Ray starts the coordinator again elsewhere).

    Measured with Ray 2.60: a soft node affinity is not kept for an actor that asks for no
    resources (it lands elsewhere about half the time), so the head is asked for by its
    resource ``node:__internal_head__`` and a node by id with a token CPU share.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if node == "any":
        return {"num_cpus": 0}
    if node == "head":
        return {"num_cpus": 0, "resources": {"node:__internal_head__": 0.001}}
    return {
        "num_cpus": 0.01,
        "scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=True),
    }
