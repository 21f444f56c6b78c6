"""GroupCoordinator: one named Ray actor per processor group.

It is the only one that decides who owns a partition. Every change of owner (start, replacing
a dead or hung actor, live scaling) is a *move* of one partition, done in one order:
  1. the new owner recovers the partition (state ``recovered``) while the old one still works;
  2. the coordinator starts a new epoch (the old owner's lease can no longer be renewed);
  3. the old owner, if alive, is told to release the partition (finish its batch, commit);
     if it cannot be reached, the coordinator waits until its lease has expired;
  4. the new owner is told to go: it reads the changelog tail and processes from the
     committed offsets.
So at most one owner writes at a time and nothing is lost. After a restart of the coordinator
itself, it adopts the partition actors that are still alive (found by name).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from goka_ray.actors.partition import PartitionActor, WorkerSpec
from goka_ray.control.assignment import plan_actors
from goka_ray.control.fencing import EpochTable
from goka_ray.control.names import coordinator_name, standby_prefix, worker_prefix
from goka_ray.control.status import GroupStatus, PartitionStatus
from goka_ray.core.config import Config, GroupConfig
from goka_ray.core.graph import GroupGraph
from goka_ray.errors import GokaRayError, ProcessingError
from goka_ray.kafka.runner import RunnerConfig
from goka_ray.kafka.topics import TopicManager

logger = logging.getLogger(__name__)

#: pings a worker may miss before it counts as hung and is replaced
HUNG_AFTER_MISSES = 3


@dataclass(frozen=True)
class GroupSpec:
    """What a coordinator is created from (Ray re-creates it from the same spec)."""

    brokers: str
    graph: GroupGraph
    config: Config
    lease_duration: float = 6.0
    watch_interval: float = 0.5
    #: called in the partition actors with an Assignment (see Processor's on_rebalance)
    on_rebalance: Callable[[Any], None] | None = None


@dataclass
class _Worker:
    name: str
    handle: Any
    partitions: set[int] = field(default_factory=set)
    misses: int = 0
    node_id: str | None = None


@dataclass
class _Move:
    partition: int
    worker: str
    epoch: int
    old: str | None
    bumped: bool = False
    #: the previous owner's process is known to be gone: no lease to wait out
    old_gone: bool = False


class GroupCoordinator:
    """Assigns, watches, replaces and scales the partition actors of one group."""

    def __init__(self, spec: GroupSpec) -> None:
        logging.basicConfig(level=logging.INFO)
        self.spec = spec
        self.group = spec.graph.group
        self.config = spec.config
        self.epochs = EpochTable(spec.lease_duration)
        self.workers: dict[str, _Worker] = {}
        self.owner: dict[int, str] = {}
        self.moves: dict[int, _Move] = {}
        self.restarts: dict[int, int] = {}
        #: partition -> its standby actors (each follows exactly that one partition)
        self.standbys: dict[int, list[_Worker]] = {}
        #: recover_ahead: no partition gets ``go`` until every partition has recovered
        self._hold_go = spec.config.group(spec.graph.group).recover_ahead
        self.partitions = 0
        self.state = "starting"
        self.error: BaseException | None = None
        self._last: dict[tuple[str, int], PartitionStatus] = {}
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._watch: threading.Thread | None = None
        self._adopt()

    # -- set-up -------------------------------------------------------------------------------

    @property
    def _group_config(self) -> GroupConfig:
        return self.config.group(self.group)

    def _worker_spec(self) -> WorkerSpec:
        cfg = self._group_config
        return WorkerSpec(
            brokers=self.spec.brokers,
            graph=self.spec.graph,
            storage_dir=self.config.storage_dir,
            runner_config=RunnerConfig(
                batch_size=cfg.batch_size,
                initial_offset=cfg.initial_offset,
                processing_guarantee=cfg.processing_guarantee,
                partitioner=cfg.partitioner,
                consumer_config=self.config.consumer_config(),
                producer_config=self.config.producer_config(),
            ),
            coordinator_name=coordinator_name(self.group),
            namespace=self.config.namespace,
            lease_duration=self.spec.lease_duration,
            on_rebalance=self.spec.on_rebalance,
        )

    def start(self) -> int:
        """Create topics, check co-partitioning, place the actors; returns the partition count.

        Idempotent: a second call (e.g. from another driver) attaches to the running group.
        """
        with self._lock:
            if self._watch is not None:
                return self.partitions
            with TopicManager(self.spec.brokers) as topics:
                self.partitions = topics.ensure_group_topics(self.spec.graph)
            cfg = self._group_config
            for parts in plan_actors(
                self.partitions, partitions_per_actor=cfg.partitions_per_actor, actors=cfg.actors
            ):
                self._spawn(parts)
            self._ensure_standbys()
            self.state = "running"
            self._start_watch()
            return self.partitions

    def _adopt(self) -> None:
        """After a restart: take over the partition actors of this group that are still alive."""
        prefix = worker_prefix(self.group)
        named = ray.util.list_named_actors(all_namespaces=False)
        names = [n for n in named if n.startswith(prefix)]
        self._adopt_standbys([n for n in named if n.startswith(standby_prefix(self.group))])
        if not names:
            return
        running: dict[int, tuple[str, int]] = {}
        waiting: dict[int, tuple[str, int]] = {}
        for name in names:
            try:
                handle = ray.get_actor(name, namespace=self.config.namespace)
                statuses: list[PartitionStatus] = ray.get(handle.status.remote(), timeout=10)
            except Exception as exc:
                logger.warning("group %s: cannot adopt %s: %s", self.group, name, exc)
                continue
            worker = _Worker(name, handle)
            self.workers[name] = worker
            for st in statuses:
                worker.partitions.add(st.partition)
                worker.node_id = st.node_id
                self.epochs.adopt(st.partition, st.epoch)
                target = running if st.state == "running" else waiting
                if st.partition not in target or target[st.partition][1] < st.epoch:
                    target[st.partition] = (name, st.epoch)
        for p, (name, _epoch) in running.items():
            self.owner[p] = name
        for p, (name, epoch) in waiting.items():
            if p not in self.owner:
                self.moves[p] = _Move(p, name, epoch, None, bumped=True)
        with TopicManager(self.spec.brokers) as topics:
            self.partitions = topics.check_copartitioned(self.spec.graph)
        for p in range(self.partitions):
            if p not in self.owner and p not in self.moves:
                self._spawn([p])
        self.state = "running"
        logger.info("group %s: adopted %d partition actors", self.group, len(self.workers))
        self._start_watch()

    def _adopt_standbys(self, names: list[str]) -> None:
        for name in names:
            try:
                handle = ray.get_actor(name, namespace=self.config.namespace)
                statuses: list[PartitionStatus] = ray.get(handle.status.remote(), timeout=10)
            except Exception as exc:
                logger.warning("group %s: cannot adopt standby %s: %s", self.group, name, exc)
                continue
            for st in statuses:
                worker = _Worker(name, handle, {st.partition}, node_id=st.node_id)
                self.standbys.setdefault(st.partition, []).append(worker)

    # -- standbys -----------------------------------------------------------------------------

    def _ensure_standbys(self) -> None:
        """Start standbys until every partition has ``standby_replicas`` of them."""
        wanted = self._group_config.standby_replicas
        if not wanted:
            return
        nodes = _alive_nodes()
        for p in range(self.partitions):
            have = self.standbys.setdefault(p, [])
            while len(have) < wanted:
                busy = {self._node_of(p)} | {w.node_id for w in have}
                have.append(self._spawn_standby(p, [n for n in nodes if n not in busy]))

    def _node_of(self, partition: int) -> str | None:
        name = self.owner.get(partition) or (
            self.moves[partition].worker if partition in self.moves else None
        )
        worker = self.workers.get(name) if name else None
        return worker.node_id if worker else None

    def _spawn_standby(self, partition: int, other_nodes: list[str]) -> _Worker:
        """A passive actor that keeps a copy of ``partition`` current from its changelog."""
        name = f"{standby_prefix(self.group)}p{partition}-{uuid.uuid4().hex[:6]}"
        # another node than the owner's where there is one: it must survive the owner's node
        node = other_nodes[partition % len(other_nodes)] if other_nodes else None
        handle = self._new_actor(name, node)
        handle.follow.remote(partition)
        return _Worker(name, handle, {partition}, node_id=node)

    def _check_standbys(self) -> None:
        for workers in self.standbys.values():
            for worker in list(workers):
                try:
                    for st in ray.get(worker.handle.status.remote(), timeout=5):
                        worker.node_id = st.node_id
                except Exception as exc:
                    logger.warning("group %s: standby %s lost (%s)", self.group, worker.name, exc)
                    workers.remove(worker)
                    _kill_quietly(worker.handle)

    def _promote(self, partition: int) -> bool:
        """Move ``partition`` to one of its standbys; False if it has none."""
        candidates = self.standbys.get(partition) or []
        if not candidates:
            return False
        standby = candidates.pop(0)
        epoch = self.epochs.current(partition) + 1
        standby.handle.assign.remote(partition, epoch)
        self.workers[standby.name] = standby
        self.moves[partition] = _Move(partition, standby.name, epoch, None)
        logger.warning(
            "group %s: partition %d fails over to its standby %s",
            self.group,
            partition,
            standby.name,
        )
        return True

    def _start_watch(self) -> None:
        self._watch = threading.Thread(target=self._watch_loop, daemon=True, name="watch")
        self._watch.start()

    def _new_actor(self, name: str, node: str | None) -> Any:
        """A detached PartitionActor of this group, preferably on ``node`` (soft affinity)."""
        cfg = self._group_config
        options: dict[str, Any] = {
            "name": name,
            "namespace": self.config.namespace,
            "lifetime": "detached",
            "max_restarts": 0,
            "max_concurrency": 16,
            "num_cpus": cfg.num_cpus,
        }
        if cfg.memory is not None:
            options["memory"] = cfg.memory
        if node is not None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=True)
        elif cfg.placement == "spread":
            options["scheduling_strategy"] = "SPREAD"
        actor_class: Any = ray.remote(PartitionActor)
        return actor_class.options(**options).remote(self._worker_spec(), name)

    def _spawn(self, partitions: list[int], *, near: str | None = None) -> _Worker:
        """Create a partition actor and start moving ``partitions`` to it."""
        name = f"{worker_prefix(self.group)}{uuid.uuid4().hex[:8]}"
        # near: the node of a replaced actor, whose LevelDB copy is still there
        handle = self._new_actor(name, near)
        worker = _Worker(name, handle, set(partitions), node_id=near)
        self.workers[name] = worker
        for p in partitions:
            epoch = self.epochs.current(p) + 1
            handle.assign.remote(p, epoch)
            self.moves[p] = _Move(p, name, epoch, self.owner.get(p))
        return worker

    # -- the watch loop -----------------------------------------------------------------------

    def _watch_loop(self) -> None:
        while not self._stopping.wait(self.spec.watch_interval):
            try:
                with self._lock:
                    if self.state in ("failed", "stopped"):
                        return
                    self._tick()
            except Exception:
                logger.exception("group %s: watch loop error", self.group)

    def _tick(self) -> None:
        statuses: dict[tuple[str, int], PartitionStatus] = {}
        refs = {name: w.handle.status.remote() for name, w in self.workers.items()}
        for name, ref in refs.items():
            worker = self.workers[name]
            try:
                for st in ray.get(ref, timeout=5):
                    statuses[(name, st.partition)] = st
                    worker.node_id = st.node_id
                worker.misses = 0
            except GetTimeoutError:
                worker.misses += 1
                if worker.misses >= HUNG_AFTER_MISSES:
                    logger.warning("group %s: %s is hung; replacing it", self.group, name)
                    self._replace(worker)
            except RayActorError:
                logger.warning("group %s: %s died; replacing it", self.group, name)
                self._replace(worker, died=True)
        self._last = statuses
        for (name, p), st in statuses.items():
            if st.state == "failed" and name in self.workers:
                self._on_failure(self.workers[name], p)
                if self.state == "failed":
                    return
        self._advance_moves(statuses)
        if self.state == "scaling" and not self.moves:
            self.state = "running"
        if self._group_config.standby_replicas:
            self._check_standbys()
            self._ensure_standbys()

    def _replace(self, worker: _Worker, *, died: bool = False) -> None:
        """Move the partitions of a dead or hung worker to a standby or a new worker.

        If Ray reports the actor dead while its node is alive, its process is gone and cannot
        write any more, so the new owner need not wait out the old lease. A hung actor, or one
        on a lost node (possibly a partitioned zombie), is waited out.
        """
        gone = died and worker.node_id is not None and worker.node_id in _alive_nodes()
        self.workers.pop(worker.name, None)
        try:
            ray.kill(worker.handle)
        except Exception:
            pass
        lost = sorted(
            p
            for p in worker.partitions
            if self.owner.get(p) == worker.name
            or (p in self.moves and self.moves[p].worker == worker.name)
        )
        for p in lost:
            self.owner.pop(p, None)
            self.moves.pop(p, None)
            self.restarts[p] = self.restarts.get(p, 0) + 1
        # moves away from the dead worker no longer need its release
        for mv in self.moves.values():
            if mv.old == worker.name:
                mv.old = None
        if any(self.restarts[p] > self._group_config.max_restarts for p in lost):
            self._fail(
                GokaRayError(
                    f"group {self.group}: partitions {lost} were restarted more than "
                    f"max_restarts={self._group_config.max_restarts} times; see the actor logs"
                )
            )
            return
        rest = [p for p in lost if not self._promote(p)]
        if rest:
            self._spawn(rest, near=worker.node_id)
        for p in lost:
            if p in self.moves:
                self.moves[p].old_gone = gone

    def _on_failure(self, worker: _Worker, partition: int) -> None:
        try:
            error = ray.get(worker.handle.failures.remote(), timeout=10).get(partition)
        except Exception as exc:
            error = exc
        if isinstance(error, ProcessingError):
            self._fail(error)  # a callback failed: it would fail again, stop the group
            return
        self.restarts[partition] = self.restarts.get(partition, 0) + 1
        if self.restarts[partition] > self._group_config.max_restarts:
            self._fail(error or GokaRayError(f"partition {partition} failed"))
            return
        logger.warning(
            "group %s partition %d failed (%s); restarting it", self.group, partition, error
        )
        epoch = self.epochs.current(partition) + 1
        handle: Any = worker.handle
        handle.assign.remote(partition, epoch)
        self.owner.pop(partition, None)
        self.moves[partition] = _Move(partition, worker.name, epoch, None)

    def _advance_moves(self, statuses: dict[tuple[str, int], PartitionStatus]) -> None:
        if self._hold_go:
            recovered = [
                p
                for p, mv in self.moves.items()
                if (st := statuses.get((mv.worker, p))) is not None and st.state == "recovered"
            ]
            if len(recovered) < self.partitions:
                return
            logger.info("group %s: every partition recovered; processing starts", self.group)
            self._hold_go = False
        for p, mv in list(self.moves.items()):
            st = statuses.get((mv.worker, p))
            if st is None or st.state != "recovered":
                continue
            if not mv.bumped:
                epoch = self.epochs.bump(p, fresh=mv.old is None and mv.epoch == 1)
                assert epoch == mv.epoch, (epoch, mv.epoch)
                mv.bumped = True
                if mv.old_gone:
                    self.epochs.released(p)
            if mv.old is not None:
                self._release(mv.old, p)
                mv.old = None
            if self.epochs.wait_usable(p) > 0:
                continue
            worker = self.workers.get(mv.worker)
            if worker is None:
                continue
            ray.get(worker.handle.go.remote(p, mv.epoch), timeout=30)
            self.owner[p] = mv.worker
            del self.moves[p]
        self._retire_idle_workers()

    def _release(self, name: str, partition: int) -> None:
        worker = self.workers.get(name)
        if worker is None:
            return
        try:
            if ray.get(worker.handle.release.remote(partition), timeout=90):
                self.epochs.released(partition)  # confirmed stopped: no need to wait the lease
        except Exception as exc:
            logger.warning(
                "group %s: release of %d by %s failed (%s); waiting for its lease",
                self.group,
                partition,
                name,
                exc,
            )
        worker.partitions.discard(partition)

    def _retire_idle_workers(self) -> None:
        for name, worker in list(self.workers.items()):
            if worker.partitions:
                continue
            del self.workers[name]
            try:
                ray.get(worker.handle.shutdown.remote(), timeout=60)
            except Exception:
                pass
            ray.kill(worker.handle)

    def _fail(self, error: BaseException) -> None:
        logger.error("group %s failed: %s", self.group, error)
        self.error = error
        self.state = "failed"
        self._shutdown_workers()

    def _shutdown_workers(self) -> None:
        standbys = [w for ws in self.standbys.values() for w in ws]
        self.standbys.clear()
        for w in standbys:
            _kill_quietly(w.handle)
        refs = [w.handle.shutdown.remote() for w in self.workers.values()]
        try:
            ray.get(refs, timeout=60)
        except Exception as exc:
            logger.warning("group %s: shutting down workers: %s", self.group, exc)
        for w in self.workers.values():
            try:
                ray.kill(w.handle)
            except Exception:
                pass

    # -- the API the driver calls -------------------------------------------------------------

    def renew(self, partition: int, epoch: int) -> bool:
        """Lease renewal from a partition actor: is ``epoch`` still current?"""
        return self.epochs.renew(partition, epoch)

    def status(self) -> GroupStatus:
        by_partition: dict[int, PartitionStatus] = {}
        for (name, p), st in self._last.items():
            current = self.owner.get(p) == name or (
                p in self.moves and self.moves[p].worker == name
            )
            if current:
                by_partition[p] = st
        parts = []
        for p in range(self.partitions):
            st = by_partition.get(p) or PartitionStatus(partition=p, state="starting")
            parts.append(_with_restarts(st, self.restarts.get(p, 0), len(self.standbys.get(p, []))))
        error = None if self.error is None else f"{type(self.error).__name__}: {self.error}"
        return GroupStatus(self.group, self.state, parts, error)

    def failure(self) -> BaseException | None:
        return self.error

    def scale(self, changes: dict[str, Any]) -> bool:
        """Apply a config change live; returns False when nothing needs to move."""
        with self._lock:
            if self.state not in ("running", "scaling"):
                raise GokaRayError(f"group {self.group} is {self.state}; cannot scale it")
            old_cfg = self._group_config
            self.config = self.config.with_group(self.group, **changes)
            cfg = self._group_config
            plan = plan_actors(
                self.partitions, partitions_per_actor=cfg.partitions_per_actor, actors=cfg.actors
            )
            current = sorted(sorted(w.partitions) for w in self.workers.values())
            resources = (cfg.num_cpus, cfg.memory, cfg.placement)
            same_resources = resources == (old_cfg.num_cpus, old_cfg.memory, old_cfg.placement)
            if plan == current and same_resources:
                return False
            self.state = "scaling"
            for parts in plan:
                self._spawn(parts)
            return True

    def stop(self) -> None:
        """Stop every partition actor gracefully (commit and close), then forget them."""
        with self._lock:
            self._stopping.set()
            if self.state != "failed":
                self.state = "stopped"
            self._shutdown_workers()
            self.workers.clear()

    def ping(self) -> str:
        return self.state

    def visit_all(self, name: str, meta: Any, timeout: float | None = None) -> int:
        """Run visitor ``name`` on every partition (each inside its processing loop)."""
        with self._lock:
            if self.state != "running" or self.moves:
                raise GokaRayError(
                    f"group {self.group} is {self.state}"
                    + (f" with partitions {sorted(self.moves)} moving" if self.moves else "")
                    + "; visit when every partition runs"
                )
            refs = [
                self.workers[w].handle.visit.remote(p, name, meta, timeout)
                for p, w in sorted(self.owner.items())
            ]
        return sum(ray.get(refs, timeout=None if timeout is None else timeout + 30))

    def describe(self) -> GroupInfo:
        """Brokers, config and table codec of this group, for drivers that attach to it."""
        graph = self.spec.graph
        persist = graph.persist
        return GroupInfo(
            group=self.group,
            brokers=self.spec.brokers,
            config=self.config,
            table=graph.table_topic if persist is not None else None,
            table_codec=persist.codec if persist is not None else None,
            partitions=self.partitions,
        )


def _with_restarts(st: PartitionStatus, restarts: int, standbys: int = 0) -> PartitionStatus:
    from dataclasses import replace

    return replace(st, restarts=restarts, standbys=standbys)


def _alive_nodes() -> list[str]:
    nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
    return sorted(n["NodeID"] for n in nodes if n.get("Alive"))


def _kill_quietly(handle: Any) -> None:
    try:
        ray.kill(handle)
    except Exception:
        pass


@dataclass(frozen=True)
class GroupInfo:
    """What a driver attaching to a running group needs (no user code, so it always unpickles)."""

    group: str
    brokers: str
    config: Config
    table: str | None
    table_codec: Any
    partitions: int
    partitioner: Any = None
