"""PartitionActor: the Ray shell that owns PartitionRunners for a few partitions of a group.

It holds no processing logic: each owned partition is a PartitionRunner running in a thread of
its own (Kafka polls block, so never on the actor's event loop), fenced by a Lease renewed with
the group's coordinator. Control calls (status, assign, release) run on other threads of this
threaded actor, so they are answered while the runners work.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from goka_ray.errors import StorageError
from goka_ray.fencing import Lease
from goka_ray.graph import GroupGraph
from goka_ray.metrics import PartitionMetrics, ray_sink
from goka_ray.runner import PartitionRunner, RunnerConfig, RunnerState
from goka_ray.status import PartitionStatus

logger = logging.getLogger(__name__)

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
    lease_duration: float = 6.0


class _Owned:
    """One partition this actor owns: its runner, thread, hand-over gate and lease."""

    def __init__(
        self, runner: PartitionRunner, epoch: int, lease: Lease, scratch: Path | None
    ) -> None:
        self.runner = runner
        self.epoch = epoch
        self.lease = lease
        self.go = threading.Event()
        self.scratch = scratch
        self.thread = threading.Thread(
            target=self._run, daemon=True, name=f"partition-{runner.partition}"
        )

    def _run(self) -> None:
        try:
            self.runner.run(self.go)
        except BaseException:  # kept in runner.error / runner.state for the coordinator
            pass


class PartitionActor:
    """Owns a set of partitions of one group (see module docstring)."""

    def __init__(self, spec: WorkerSpec, name: str) -> None:
        logging.basicConfig(level=logging.INFO)
        self.spec = spec
        self.name = name
        self._owned: dict[int, _Owned] = {}
        self._lock = threading.Lock()
        self._coordinator: Any = None
        self._node_id = ray.get_runtime_context().get_node_id()
        self._metrics: dict[int, PartitionMetrics] = {}
        self._closed = threading.Event()
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

    def _renew(self, partition: int, epoch: int) -> bool:
        if self._coordinator is None:
            self._coordinator = ray.get_actor(
                self.spec.coordinator_name, namespace=self.spec.namespace
            )
        try:
            return bool(ray.get(self._coordinator.renew.remote(partition, epoch), timeout=5))
        except Exception:
            self._coordinator = None  # look it up again: it may have been restarted
            raise

    def assign(self, partition: int, epoch: int) -> None:
        """Start recovering ``partition`` under ``epoch``; it processes after :meth:`go`."""
        with self._lock:
            old = self._owned.get(partition)
            if old is not None and old.thread.is_alive():
                if old.epoch == epoch:
                    return
                self._stop(partition)
            stop_flag = threading.Event()
            lease = Lease(
                partition, epoch, self._renew, self.spec.lease_duration, stopped=stop_flag.is_set
            )
            runner, scratch = self._make_runner(partition, epoch, lease)
            owned = _Owned(runner, epoch, lease, scratch)
            self._owned[partition] = owned
            owned.thread.start()

    def _make_runner(
        self, partition: int, epoch: int, lease: Lease
    ) -> tuple[PartitionRunner, Path | None]:
        s = self.spec
        try:
            runner = PartitionRunner(
                s.brokers,
                s.graph,
                partition,
                storage_dir=s.storage_dir,
                config=s.runner_config,
                fence=lease.check,
                epoch=epoch,
            )
            return runner, None
        except StorageError:
            # the previous owner still holds the local copy on this node (a live hand-over):
            # recover into a scratch copy instead; the changelog is the source of truth
            scratch = Path(s.storage_dir) / ".handover" / f"{s.graph.group}-p{partition}-e{epoch}"
            logger.info("partition %d: local copy busy, recovering into %s", partition, scratch)
            runner = PartitionRunner(
                s.brokers,
                s.graph,
                partition,
                storage_dir=scratch,
                config=s.runner_config,
                fence=lease.check,
                epoch=epoch,
            )
            return runner, scratch

    def go(self, partition: int, epoch: int) -> bool:
        """Let a recovered partition process (the coordinator made ``epoch`` current)."""
        owned = self._owned.get(partition)
        if owned is None or owned.epoch != epoch:
            return False
        owned.go.set()
        return True

    def release(self, partition: int, timeout: float = 60.0) -> bool:
        """Stop a partition gracefully (finish the batch, commit, close); True once stopped."""
        with self._lock:
            return self._stop(partition, timeout)

    def _stop(self, partition: int, timeout: float = 60.0) -> bool:
        owned = self._owned.pop(partition, None)
        if owned is None:
            return True
        owned.runner.stop()
        owned.thread.join(timeout)
        if owned.scratch is not None:
            shutil.rmtree(owned.scratch, ignore_errors=True)
        return not owned.thread.is_alive()

    def shutdown(self) -> None:
        """Stop every owned partition."""
        with self._lock:
            for p in list(self._owned):
                self._stop(p)

    def ping(self) -> tuple[int, str]:
        return os.getpid(), self._node_id

    def status(self) -> list[PartitionStatus]:
        out = []
        for p, owned in sorted(self._owned.items()):
            st = owned.runner.status()
            error = owned.runner.error
            out.append(
                PartitionStatus(
                    partition=p,
                    state=st.state.value,
                    node_id=self._node_id,
                    actor_name=self.name,
                    pid=os.getpid(),
                    offsets=st.offsets,
                    lag=st.lag,
                    keys=st.keys,
                    epoch=owned.epoch,
                    processed=st.processed,
                    skipped=st.skipped,
                    dead_lettered=st.dead_lettered,
                    recovered=st.recovered,
                    error=None if error is None else f"{type(error).__name__}: {error}",
                )
            )
        return out

    def failures(self) -> dict[int, BaseException]:
        """The errors of failed partitions (ProcessingError keeps its message coordinates)."""
        return {
            p: o.runner.error
            for p, o in self._owned.items()
            if o.runner.state == RunnerState.FAILED and o.runner.error is not None
        }
