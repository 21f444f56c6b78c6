"""PartitionActor: the Ray shell that owns PartitionRunners for a few partitions of a group.

It holds no processing logic: each owned partition is a PartitionRunner running in a thread of
its own (Kafka polls block, so never on the actor's event loop), fenced by a Lease renewed with
the group's coordinator. Control calls (status, assign, release) run on other threads of this
threaded actor, so they are answered while the runners work.

Fencing (see :mod:`goka_ray.control.fencing`): a runner writes only after a check of its
lease, which the actor renews under its own name, so the coordinator refuses the renewal of
anyone but the current owner of the current epoch. A partition whose lease was refused is
dropped; an actor left with nothing because every partition it held moved to other owners
stops itself (it is stale: a coordinator that tracks it would not have fenced it).

Local copies belong to the node: every LevelDB directory this actor opens lies under
``node_storage_dir(storage_dir, <this node's id>)``, so two Ray nodes sharing a disk (one
machine, a mounted home directory) never open the same directory. A partition that comes
back to a node finds its copy there and reads only the changelog's tail; on another node it
recovers from the changelog (or a standby there).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.util import metrics

from goka_ray.actors.collector import settle_collector
from goka_ray.control.fencing import LEASE_DURATION, Lease
from goka_ray.control.metrics import METRICS, MetricSink, PartitionMetrics
from goka_ray.control.status import Assignment, PartitionStatus
from goka_ray.core.graph import GroupGraph
from goka_ray.core.storage import node_storage_dir
from goka_ray.errors import FencedError, GokaRayError, StorageLocked
from goka_ray.kafka.runner import PartitionRunner, RunnerConfig, RunnerState

logger = logging.getLogger(__name__)
#: log lines of the actor processes carry their time (failovers are read from them)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: seconds between two metric snapshots of the owned partitions
METRICS_INTERVAL = 2.0


@dataclass(frozen=True)
class WorkerSpec:
    """What every partition actor of a group is built from."""

    brokers: str
    graph: GroupGraph
    storage_dir: str
    runner_config: RunnerConfig
    coordinator_name: str
    namespace: str
    lease_duration: float = LEASE_DURATION
    #: called with an Assignment when this actor takes or gives up a partition
    on_rebalance: Callable[[Assignment], None] | None = None
    #: fingerprint of ``graph`` and its code (reported in every status)
    code: str = ""


class _Owned:
    """One partition this actor owns: its runner, thread, hand-over gate and lease."""

    def __init__(
        self,
        runner: PartitionRunner,
        epoch: int,
        lease: Lease | None,
        scratch: Path | None,
        *,
        standby_dir: Path | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        self.runner = runner
        self.epoch = epoch
        self.lease = lease
        self.go = threading.Event()
        self.scratch = scratch
        #: set while this is a standby copy: it follows the changelog and never processes
        self.standby_dir = standby_dir
        self.storage_dir: Path | None = standby_dir
        #: set when the actor stops the runner (the lease may then give up instead of waiting)
        self.stopping = stopping or threading.Event()
        #: called with this record when the runner's thread ends
        self.on_end: Callable[[_Owned], None] | None = None
        #: called when the runner has recovered and waits for ``go``, and when it runs
        self.on_state: Callable[[RunnerState], None] | None = None
        self.thread = threading.Thread(
            target=self._run, daemon=True, name=f"partition-{runner.partition}"
        )

    def _run(self) -> None:
        try:
            self.runner.run(self.go, self.on_state)
        except BaseException:  # kept in runner.error / runner.state for the coordinator
            pass
        finally:
            if self.on_end is not None:
                self.on_end(self)


class PartitionActor:
    """Owns a set of partitions of one group (see module docstring)."""

    def __init__(self, spec: WorkerSpec, name: str) -> None:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
        self.spec = spec
        self.name = name
        self._owned: dict[int, _Owned] = {}
        self._lock = threading.Lock()
        #: partitions taken away by a refused lease renewal (another owner holds them now)
        self._fenced: set[int] = set()
        self._end_lock = threading.Lock()
        self._coordinator: Any = None
        self._node_id = ray.get_runtime_context().get_node_id()
        #: this node's local copies (``storage_dir`` keyed by the node)
        self._storage_dir = node_storage_dir(spec.storage_dir, self._node_id)
        self._metrics: dict[int, PartitionMetrics] = {}
        self._closed = threading.Event()
        settle_collector()
        threading.Thread(target=self._report_metrics, daemon=True, name="metrics").start()

    def _report_metrics(self) -> None:
        """Publish every owned partition's counters and gauges to Ray's metrics agent."""
        while not self._closed.wait(METRICS_INTERVAL):
            for p, owned in list(self._owned.items()):
                try:
                    if p not in self._metrics:
                        self._metrics[p] = PartitionMetrics(self.spec.graph.group, p, ray_sink)
                    self._metrics[p].observe(owned.runner.status())
                except Exception:  # metrics must never take a partition down
                    logger.debug("metrics of partition %d failed", p, exc_info=True)

    def _coordinator_handle(self) -> Any:
        if self._coordinator is None:
            self._coordinator = ray.get_actor(
                self.spec.coordinator_name, namespace=self.spec.namespace
            )
        return self._coordinator

    def _nudge(self, state: RunnerState) -> None:
        """Tell the coordinator that a partition recovered (it sends ``go``) or runs (its
        status shows it): in a status round it runs at once, not at its next tick."""
        try:
            self._coordinator_handle().nudge.remote()
        except Exception as exc:  # the next tick finds the partition recovered all the same
            self._coordinator = None
            logger.debug("could not nudge the coordinator: %s", exc)

    def _renew(self, partition: int, epoch: int) -> bool:
        coordinator = self._coordinator_handle()
        try:
            renewal = coordinator.renew.remote(partition, epoch, self.name)
            # an answer later than a lease is of no use: the renewal counts from when it was sent
            return bool(ray.get(renewal, timeout=self.spec.lease_duration))
        except Exception:
            self._coordinator = None  # look it up again: it may have been restarted
            raise

    def assign(self, partition: int, epoch: int) -> None:
        """Start recovering ``partition`` under ``epoch``; it processes after :meth:`go`.

        A standby copy of the partition held by this actor is promoted: the new runner opens
        the standby's LevelDB copy, so it recovers only the changelog tail.
        """
        with self._lock:
            old = self._owned.get(partition)
            storage: Path | None = None
            if old is not None and old.standby_dir is not None:
                storage = old.standby_dir
                self._stop(partition, keep_storage=True)
                logger.info("partition %d: promoting the standby copy in %s", partition, storage)
            elif old is not None and old.thread.is_alive():
                if old.epoch == epoch:
                    return
                self._stop(partition)
            stopping = threading.Event()
            lease = Lease(
                partition, epoch, self._renew, self.spec.lease_duration, stopped=stopping.is_set
            )
            runner, scratch = self._make_runner(partition, epoch, lease, storage)
            owned = _Owned(runner, epoch, lease, scratch, stopping=stopping)
            owned.on_end = self._ended
            owned.on_state = self._nudge
            owned.storage_dir = storage
            self._owned[partition] = owned
            owned.thread.start()

    def follow(self, partition: int) -> None:
        """Keep a standby copy of ``partition``: recover it, then follow its changelog.

        The copy lives in a directory of this actor (``<node dir>/.standby/<actor>``), so it
        never competes with the owner's copy for LevelDB's lock on a shared node.
        """
        with self._lock:
            if partition in self._owned:
                return
            directory = self._storage_dir / ".standby" / self.name.rsplit("/", 1)[-1]
            runner = self._runner_at(partition, 0, directory, _never_write)
            owned = _Owned(runner, 0, None, None, standby_dir=directory)
            self._owned[partition] = owned
            owned.thread.start()

    def _notify(self, partition: int, event: str, epoch: int) -> None:
        callback = self.spec.on_rebalance
        if callback is None:
            return
        try:
            callback(Assignment(self.spec.graph.group, self.name, partition, event, epoch))
        except Exception:  # a user callback must not take the partition down
            logger.exception("rebalance callback failed for partition %d (%s)", partition, event)

    def _runner_at(
        self, partition: int, epoch: int, storage_dir: Path | str, fence: Callable[[], None]
    ) -> PartitionRunner:
        s = self.spec
        return PartitionRunner(
            s.brokers,
            s.graph,
            partition,
            storage_dir=storage_dir,
            config=s.runner_config,
            fence=fence,
            epoch=epoch,
        )

    def _make_runner(
        self, partition: int, epoch: int, lease: Lease, storage: Path | None = None
    ) -> tuple[PartitionRunner, Path | None]:
        s = self.spec
        if storage is not None:
            return self._runner_at(partition, epoch, storage, lease.check), None
        try:
            return self._runner_at(partition, epoch, self._storage_dir, lease.check), None
        except StorageLocked:
            # the previous owner still holds the local copy on this node (a live hand-over):
            # recover into a scratch copy instead; the changelog is the source of truth
            scratch = self._storage_dir / ".handover" / f"{s.graph.group}-p{partition}-e{epoch}"
            logger.info("partition %d: local copy busy, recovering into %s", partition, scratch)
            return self._runner_at(partition, epoch, scratch, lease.check), scratch

    def _ended(self, owned: _Owned) -> None:
        """A runner's thread ended: drop it if its lease was refused while it processed; stop
        this actor if that leaves it nothing (every partition it held has another owner).

        Runs on the runner's thread, so it never waits for ``_lock`` (a release holding it may
        be joining this very thread).
        """
        partition = owned.runner.partition
        lease = owned.lease
        if lease is None or not lease.refused or owned.runner.state == RunnerState.FAILED:
            return
        with self._end_lock:
            if self._owned.get(partition) is not owned:
                return  # released or replaced meanwhile
            self._owned.pop(partition, None)
            self._fenced.add(partition)
            if self._owned:
                return
        logger.warning(
            "%s: partitions %s moved to other owners (leases refused); stopping this stale actor",
            self.name,
            sorted(self._fenced),
        )
        self._closed.set()
        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)

    def go(self, partition: int, epoch: int) -> bool:
        """Let a recovered partition process (the coordinator made ``epoch`` current)."""
        owned = self._owned.get(partition)
        if owned is None or owned.epoch != epoch or owned.standby_dir is not None:
            return False
        owned.go.set()
        self._notify(partition, "assigned", epoch)
        return True

    def release(self, partition: int, timeout: float = 60.0) -> tuple[bool, PartitionStatus | None]:
        """Stop a partition gracefully (finish the batch, commit, close): (True once stopped,
        its final status if this actor held it: the counts of its last batch included)."""
        with self._lock:
            owned = self._owned.get(partition)
            stopped = self._stop(partition, timeout)
            final = self._status_of(partition, owned) if owned is not None else None
            return stopped, final

    def _stop(self, partition: int, timeout: float = 60.0, *, keep_storage: bool = False) -> bool:
        owned = self._owned.pop(partition, None)
        if owned is None:
            return True
        owned.stopping.set()
        owned.runner.stop()
        owned.thread.join(timeout)
        if owned.go.is_set() and owned.standby_dir is None:
            self._notify(partition, "revoked", owned.epoch)
        if owned.scratch is not None:
            shutil.rmtree(owned.scratch, ignore_errors=True)
        if owned.standby_dir is not None and not keep_storage:
            shutil.rmtree(owned.standby_dir, ignore_errors=True)
        return not owned.thread.is_alive()

    def shutdown(self) -> None:
        """Stop every owned partition."""
        with self._lock:
            for p in list(self._owned):
                self._stop(p)

    def ping(self) -> tuple[int, str]:
        return os.getpid(), self._node_id

    def status(self) -> list[PartitionStatus]:
        return [self._status_of(p, owned) for p, owned in sorted(self._owned.items())]

    def _status_of(self, p: int, owned: _Owned) -> PartitionStatus:
        st = owned.runner.status()
        error = owned.runner.error
        return PartitionStatus(
            partition=p,
            state="standby" if owned.standby_dir is not None else st.state.value,
            node_id=self._node_id,
            actor_name=self.name,
            pid=os.getpid(),
            epoch=owned.epoch,
            error=None if error is None else f"{type(error).__name__}: {error}",
            code=self.spec.code,
            stats=st.stats,
        )

    def visit(self, partition: int, name: str, meta: Any, timeout: float | None = None) -> int:
        """Run visitor ``name`` over every key of ``partition``, inside its processing loop."""
        owned = self._owned.get(partition)
        if owned is None or owned.standby_dir is not None or not owned.go.is_set():
            raise GokaRayError(
                f"partition {partition} is not processing on {self.name}; it may be moving, "
                "retry the visit when the group is running"
            )
        return owned.runner.visit(name, meta, timeout=timeout)

    def failures(self) -> dict[int, BaseException]:
        """The errors of failed partitions (ProcessingError keeps its message coordinates)."""
        return {
            p: o.runner.error
            for p, o in self._owned.items()
            if o.runner.state == RunnerState.FAILED and o.runner.error is not None
        }


def _never_write() -> None:
    raise FencedError("a standby copy never writes; promote it with assign() first")


_RAY_METRICS: dict[str, Any] = {}


def ray_sink(name: str) -> MetricSink:
    """The process-wide ray.util.metrics object of a metric (created once per process)."""
    if name not in _RAY_METRICS:
        kind, description = METRICS[name]
        keys: tuple[str, ...] = ("group", "partition")
        if name == "goka_ray_lag":
            keys = (*keys, "topic")
        cls = metrics.Counter if kind == "counter" else metrics.Gauge
        _RAY_METRICS[name] = cls(name, description=description, tag_keys=keys)
    sink: MetricSink = _RAY_METRICS[name]
    return sink
