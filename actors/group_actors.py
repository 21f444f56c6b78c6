"""GroupActors: every Ray call the coordinator makes, in one class.

The coordinator's decisions live in :mod:`goka_ray.control.policy` (no Ray); this class is
how they touch the cluster: it creates, finds, calls, waits on and kills the group's partition
actors, reads what Ray knows about them (live nodes, actor states, whether a killed actor's
process has ended), and keeps the group's epoch record in Ray's GCS key-value store (which
outlives the coordinator, as Ray Serve's controller keeps its checkpoints there), with the
group's code (the graph it runs) and its settled message counts. It keeps one handle per actor
name. Calls that only start work (assign, follow) do not wait; calls whose outcome the policy
needs (release, go, shutdown) wait with a timeout, except on an actor Ray has not placed yet
(it never started anything: a release is queued behind its assign without waiting, a retire
kills it); a status round asks every actor at once and waits on all answers together until
one deadline, and asks an actor that was not placed at the last round only Ray, not the actor.
It reads each live node's total and free resources for admission
(:mod:`goka_ray.control.admission`).

What Ray reports, as measured with Ray 2.60: ``ray.kill`` marks an actor DEAD at once, but a
process that does not answer (SIGSTOP, hung) lives on until its raylet force-kills it about
5 s later; only the GCS worker table (``is_alive``, set when the raylet saw the process exit)
confirms that a killed actor's process has ended. On a lost node nothing is ever confirmed.

A lost node: Ray marks it dead only after its GCS health checks failed
``health_check_failure_threshold`` times ``health_check_period_ms`` apart (about 15 s with
Ray's defaults), and calls to its actors fail only after about 2 s. So each status round
first checks that the raylet of every node holding one of the group's actors (or a killed
one) still accepts a connection (refused, or 0.5 s without an answer: lost), and while it
waits for answers it checks the nodes of the actors that have not answered yet. A lost node
stays lost until its raylet answers again or Ray marks it dead; its actors are not asked
(they are reported silent, with their node).
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import cloudpickle
import ray
from ray.exceptions import ActorUnavailableError, RayActorError

from goka_ray.actors.classes import remote_class
from goka_ray.actors.partition import PartitionActor, WorkerSpec
from goka_ray.control.actions import ActorReport, Reach, Spawn
from goka_ray.control.admission import NodeCapacity
from goka_ray.control.fencing import EpochRecord, decode_records, encode_records
from goka_ray.control.status import PartitionState, PartitionStatus
from goka_ray.control.totals import Counts
from goka_ray.core.fingerprint import GraphFingerprint
from goka_ray.core.graph import GroupGraph

__all__ = ["GroupActors", "cluster_capacity"]

logger = logging.getLogger(__name__)

#: Ray's actor states that mean "not started yet" (not hung: waiting for resources or a process)
_NOT_STARTED = {"DEPENDENCIES_UNREADY", "PENDING_CREATION"}
#: the namespace of goka-ray's keys in Ray's internal key-value store
KV_NAMESPACE = "goka-ray"
#: seconds a raylet may take to accept a connection before its node counts as lost
RAYLET_PROBE_TIMEOUT = 0.5
#: seconds a status round waits for actors that never answered yet
FRESH_WAIT = 0.1


@dataclass(frozen=True)
class Nodes:
    """The cluster's nodes as one status round sees them."""

    #: nodes Ray reports alive whose raylet (where checked) accepts connections
    alive: frozenset[str]
    #: of those, the nodes whose total resources fit one partition actor of the group
    hosts: frozenset[str]

    def without(self, lost: frozenset[str]) -> Nodes:
        return Nodes(self.alive - lost, self.hosts - lost)


class GroupActors:
    """The Ray side of one group's partition actors (see the module docstring).

    It is also the group's :class:`~goka_ray.control.fencing.EpochStore`.
    """

    def __init__(self, namespace: str, group: str, worker_spec: Callable[[], WorkerSpec]) -> None:
        self.namespace = namespace
        self.group = group
        self._worker_spec = worker_spec
        self._handles: dict[str, Any] = {}
        #: killed actors, by name: their actor ids, to ask whether their process ended
        self._killed: dict[str, Any] = {}
        #: the node each actor last reported (or Ray placed it on)
        self._node: dict[str, str] = {}
        #: actors that answered a status round once (Ray has started them)
        self._answered: set[str] = set()
        #: nodes Ray reports alive whose raylet did not accept a connection: lost
        self.lost: frozenset[str] = frozenset()
        #: lost nodes already logged
        self._reported: frozenset[str] = frozenset()
        self._addresses: dict[str, tuple[str, int]] = {}
        self._probes = ThreadPoolExecutor(max_workers=8, thread_name_prefix="raylet-probe")
        #: actors Ray had not placed at the last status round
        self._pending: set[str] = set()

    # -- the epoch record ---------------------------------------------------------------------

    @property
    def _epochs_key(self) -> str:
        return f"epochs/{self.namespace}/{self.group}"

    def load_epochs(self) -> dict[int, EpochRecord]:
        from ray.experimental.internal_kv import _internal_kv_get

        return decode_records(_internal_kv_get(self._epochs_key, namespace=KV_NAMESPACE))

    def save_epochs(self, records: Mapping[int, EpochRecord]) -> None:
        """Write the records to the GCS (raises if it cannot: then no epoch is handed out)."""
        from ray.experimental.internal_kv import _internal_kv_put

        _internal_kv_put(
            self._epochs_key, encode_records(records), overwrite=True, namespace=KV_NAMESPACE
        )

    @property
    def _changes_key(self) -> str:
        return f"config/{self.namespace}/{self.group}"

    def load_changes(self) -> dict[str, Any]:
        """The config changes made live (``scale``) since the group started ({} if none)."""
        from ray.experimental.internal_kv import _internal_kv_get

        raw = _internal_kv_get(self._changes_key, namespace=KV_NAMESPACE)
        changes = json.loads(raw) if raw else {}
        return changes if isinstance(changes, dict) else {}

    def save_changes(self, changes: Mapping[str, Any]) -> None:
        """Record the live config changes, so that a restarted coordinator keeps them."""
        from ray.experimental.internal_kv import _internal_kv_put

        data = json.dumps(dict(changes)).encode()
        _internal_kv_put(self._changes_key, data, overwrite=True, namespace=KV_NAMESPACE)

    @property
    def _code_key(self) -> str:
        return f"code/{self.namespace}/{self.group}"

    def load_code(self) -> tuple[GroupGraph, GraphFingerprint] | None:
        """The graph the group runs and its fingerprint, as last recorded (None: none)."""
        from ray.experimental.internal_kv import _internal_kv_get

        raw = _internal_kv_get(self._code_key, namespace=KV_NAMESPACE)
        if not raw:
            return None
        try:
            graph, fingerprint = cloudpickle.loads(raw)
        except Exception as exc:  # the code cannot be loaded here: the caller's graph runs
            logger.error("group %s: cannot load its recorded graph: %s", self.group, exc)
            return None
        return graph, fingerprint

    def save_code(self, graph: GroupGraph, fingerprint: GraphFingerprint) -> None:
        """Record the graph the group runs (before any actor runs it; raises if it cannot)."""
        from ray.experimental.internal_kv import _internal_kv_put

        data = cloudpickle.dumps((graph, fingerprint))
        _internal_kv_put(self._code_key, data, overwrite=True, namespace=KV_NAMESPACE)

    def forget_code(self) -> None:
        from ray.experimental.internal_kv import _internal_kv_del

        _internal_kv_del(self._code_key, namespace=KV_NAMESPACE)

    @property
    def _totals_key(self) -> str:
        return f"totals/{self.namespace}/{self.group}"

    def load_totals(self) -> dict[int, Counts]:
        """The settled message counts per partition ({} if none)."""
        from ray.experimental.internal_kv import _internal_kv_get

        raw = _internal_kv_get(self._totals_key, namespace=KV_NAMESPACE)
        data = json.loads(raw) if raw else {}
        return {int(p): Counts(*c) for p, c in data.items()} if isinstance(data, dict) else {}

    def save_totals(self, totals: Mapping[int, Counts]) -> None:
        from ray.experimental.internal_kv import _internal_kv_put

        data = {str(p): [c.processed, c.skipped, c.dead_lettered] for p, c in totals.items()}
        _internal_kv_put(
            self._totals_key, json.dumps(data).encode(), overwrite=True, namespace=KV_NAMESPACE
        )

    # -- the cluster's resources --------------------------------------------------------------

    def capacity(self) -> list[NodeCapacity]:
        """Every live node's total and free resources, as Ray's GCS last heard them."""
        return cluster_capacity()

    # -- creating and finding -----------------------------------------------------------------

    def create(self, spawn: Spawn) -> None:
        """A detached PartitionActor named ``spawn.name`` with the resources it asks for."""
        res = spawn.resources
        options: dict[str, Any] = {
            "name": spawn.name,
            "namespace": self.namespace,
            "lifetime": "detached",
            "max_restarts": 0,
            "max_concurrency": 16,
            "num_cpus": res.num_cpus,
        }
        if res.memory is not None:
            options["memory"] = res.memory
        if res.node is not None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            # soft, spilling: another node when that one is gone or has no room now
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                res.node, soft=True, _spill_on_unavailable=True
            )
        elif res.spread:
            options["scheduling_strategy"] = "SPREAD"
        self._handles[spawn.name] = (
            remote_class(PartitionActor).options(**options).remote(self._worker_spec(), spawn.name)
        )

    def find(self, prefix: str) -> list[str]:
        """Names of the live named actors of this namespace starting with ``prefix``."""
        found = []
        for name in self.named(prefix):
            try:
                self._handles[name] = ray.get_actor(name, namespace=self.namespace)
            except ValueError:  # gone meanwhile
                continue
            self._answered.add(name)  # started before: a status round waits for its answer
            found.append(name)
        return found

    def named(self, *prefixes: str) -> frozenset[str]:
        """Names of the live named actors of this namespace starting with one of ``prefixes``."""
        names = ray.util.list_named_actors(all_namespaces=False)
        return frozenset(n for n in names if n.startswith(prefixes))

    # -- calls --------------------------------------------------------------------------------

    def assign(self, name: str, partition: int, epoch: int) -> None:
        self._handles[name].assign.remote(partition, epoch)

    def follow(self, name: str, partition: int) -> None:
        self._handles[name].follow.remote(partition)

    def release(
        self, name: str, partition: int, timeout: float = 90.0
    ) -> tuple[bool, PartitionStatus | None]:
        """(True once the actor confirmed the partition stopped, its final status if it held
        it); raises if it cannot say. An actor Ray has not placed never started anything: the
        release is queued behind its assign, not waited for."""
        handle = self._handles[name]
        if self._not_started(name):
            handle.release.remote(partition)
            return True, None
        stopped, final = ray.get(handle.release.remote(partition), timeout=timeout)
        return bool(stopped), final

    def go(self, name: str, partition: int, epoch: int, timeout: float = 30.0) -> bool:
        return bool(ray.get(self._handles[name].go.remote(partition, epoch), timeout=timeout))

    def visit(
        self,
        targets: Iterable[tuple[str, int]],
        visitor: str,
        meta: Any,
        timeout: float | None,
    ) -> int:
        refs = [self._handles[name].visit.remote(p, visitor, meta, timeout) for name, p in targets]
        return sum(ray.get(refs, timeout=None if timeout is None else timeout + 30))

    def retire(self, names: Iterable[str], timeout: float = 60.0) -> bool:
        """Stop these actors gracefully, all at once, then kill them; True if every one of
        them confirmed it stopped (committed and closed) before it was killed."""
        names = list(names)
        unplaced = [n for n in names if n in self._handles and self._not_started(n)]
        for name in unplaced:
            self.kill(name)  # never placed: nothing to stop, and it would answer only once placed
        handles = {n: self._handles[n] for n in names if n in self._handles}
        refs = [h.shutdown.remote() for h in handles.values()]
        confirmed = len(handles) + len(unplaced) == len(names)
        try:
            ray.get(refs, timeout=timeout)
        except Exception as exc:
            logger.warning("shutting down %s: %s", sorted(handles), exc)
            confirmed = False
        for name in handles:
            self.kill(name)
        return confirmed

    def kill(self, name: str) -> None:
        self._answered.discard(name)
        handle = self._handles.pop(name, None)
        self._pending.discard(name)
        if handle is not None:
            self._killed[name] = handle._actor_id
            _kill_quietly(handle)

    def confirmed_gone(self, names: Iterable[str]) -> frozenset[str]:
        """Of these killed actors, those whose process Ray confirms has ended (or never
        started). Actors this object never killed, or Ray cannot tell about, are not."""
        gone = set()
        for name in names:
            actor_id = self._killed.get(name)
            if actor_id is None:
                continue
            try:
                ended = _process_ended(actor_id)
            except Exception as exc:  # the GCS did not answer: not confirmed
                logger.debug("cannot tell whether %s ended: %s", name, exc)
                continue
            if ended:
                gone.add(name)
                del self._killed[name]
                self._node.pop(name, None)
        return frozenset(gone)

    # -- observing ----------------------------------------------------------------------------

    def status_round(
        self, names: Iterable[str], timeout: float, alive: frozenset[str] | None = None
    ) -> dict[str, ActorReport]:
        """Ask every named actor for its statuses at once; wait at most ``timeout`` for the
        actors that answered before, and not for new ones (Ray may still be starting them: a
        round that waited for them would hold up every decision, a failover's included).

        Actors that did not answer are told apart by what Ray knows of them (not started
        yet, alive but silent, dead). Actors last seen on a node that is not ``alive`` are
        not asked: they are reported silent on that node. An actor that was not placed at the
        last round is asked again only once Ray has placed it (calls would queue up in it
        meanwhile). The errors of partitions reported as failed are asked for in a second
        round.
        """
        reports: dict[str, ActorReport] = {}
        refs = {}
        for name in names:
            if name not in self._handles:
                continue
            node = self._node.get(name)
            if alive is not None and node is not None and node not in alive:
                reports[name] = ActorReport(Reach.SILENT, node_id=node)
                continue
            if name in self._pending:
                report = self._unanswered(name)
                if report.reach is Reach.PENDING:
                    reports[name] = report
                    continue
            refs[name] = self._handles[name].status.remote()
        self._pending = {n for n, r in reports.items() if r.reach is Reach.PENDING}
        if not refs:
            return reports
        done = self._wait(refs, timeout)
        for name, ref in refs.items():
            if ref not in done and self._node.get(name) in self.lost:
                reports[name] = ActorReport(Reach.SILENT, node_id=self._node[name])
                continue
            if ref not in done:
                reports[name] = self._unanswered(name)
                continue
            try:
                statuses: list[PartitionStatus] = ray.get(ref)
            except ActorUnavailableError:  # a transient loss of contact, not a death
                reports[name] = ActorReport(Reach.SILENT, node_id=self._node_of(name))
            except RayActorError:
                reports[name] = ActorReport(Reach.DEAD, node_id=self._node_of(name))
            else:
                reports[name] = ActorReport(Reach.ANSWERED, tuple(statuses))
                self._answered.add(name)
                node = next((s.node_id for s in statuses if s.node_id), None)
                if node is not None:
                    self._node[name] = node
        # a call that failed at once (the actor's process is gone): is its node gone too?
        failed = {r.node_id for r in reports.values() if r.reach in (Reach.SILENT, Reach.DEAD)}
        if failed - {None} - self.lost:
            self._probe(n for n in failed if n is not None)
        self._pending = {n for n, r in reports.items() if r.reach is Reach.PENDING}
        return self._with_failures(reports, timeout)

    def _wait(self, refs: Mapping[str, Any], timeout: float) -> set[Any]:
        """The answers that came: of actors that answered before, within ``timeout`` (in
        slices, between which the nodes of those still silent are probed: a lost node ends
        the wait for its actors); of new ones, within FRESH_WAIT."""
        fresh = [ref for name, ref in refs.items() if name not in self._answered]
        done: set[Any] = set()
        if fresh:
            done.update(ray.wait(fresh, num_returns=len(fresh), timeout=FRESH_WAIT)[0])
        known = {name: ref for name, ref in refs.items() if name in self._answered}
        deadline = time.monotonic() + timeout
        while known:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            refs_left = list(known.values())
            ready = ray.wait(refs_left, num_returns=len(refs_left), timeout=min(left, 0.25))[0]
            done.update(ready)
            known = {name: ref for name, ref in known.items() if ref not in done}
            silent = {self._node[name] for name in known if name in self._node}
            if silent - self.lost:
                self._probe(silent)
            known = {
                name: ref for name, ref in known.items() if self._node.get(name) not in self.lost
            }
        return done

    def _probe(self, nodes: Iterable[str]) -> frozenset[str]:
        """Check the raylets of ``nodes``; add those that do not answer to ``lost``."""
        probes = {
            node: self._probes.submit(_raylet_answers, *self._addresses[node])
            for node in nodes
            if node in self._addresses
        }
        lost = frozenset(node for node, answer in probes.items() if not answer.result())
        for node in sorted(lost - self._reported):
            logger.warning("the raylet of node %s does not accept connections: lost", node[:8])
        self._reported |= lost
        self.lost |= lost
        return lost

    def _with_failures(
        self, reports: dict[str, ActorReport], timeout: float
    ) -> dict[str, ActorReport]:
        failing = {
            name: self._handles[name].failures.remote()
            for name, r in reports.items()
            if any(PartitionState(s.state) is PartitionState.FAILED for s in r.statuses)
        }
        for name, ref in failing.items():
            try:
                errors: Mapping[int, BaseException | None] = ray.get(ref, timeout=timeout)
            except Exception as exc:
                logger.warning("cannot read the failures of %s: %s", name, exc)
                errors = {}
            report = reports[name]
            failed = {
                s.partition: errors.get(s.partition)
                for s in report.statuses
                if PartitionState(s.state) is PartitionState.FAILED
            }
            reports[name] = ActorReport(report.reach, report.statuses, failed, report.node_id)
        return reports

    def _unanswered(self, name: str) -> ActorReport:
        """Why an actor did not answer, as far as Ray knows, and where it runs."""
        actor = self._actor_info(name)
        node = _node_id(actor)
        if node is not None:
            self._node[name] = node
        node = node or self._node.get(name)
        state = None if actor is None else _gcs().ActorTableData.ActorState.Name(actor.state)
        if state in _NOT_STARTED:
            return ActorReport(Reach.PENDING, node_id=node)
        if state == "DEAD":
            return ActorReport(Reach.DEAD, node_id=node)
        return ActorReport(Reach.SILENT, node_id=node)

    def _not_started(self, name: str) -> bool:
        """Whether Ray reports the actor not placed (or its process not started) yet."""
        actor = self._actor_info(name)
        if actor is None:
            return False
        return _gcs().ActorTableData.ActorState.Name(actor.state) in _NOT_STARTED

    def _node_of(self, name: str) -> str | None:
        node = _node_id(self._actor_info(name))
        if node is not None:
            self._node[name] = node
        return node or self._node.get(name)

    def _actor_info(self, name: str) -> Any:
        handle = self._handles.get(name)
        if handle is None:
            return None
        try:
            return _actor_info(handle._actor_id)
        except Exception as exc:  # the GCS did not answer: judge by the silence alone
            logger.debug("no actor state for %s: %s", name, exc)
            return None

    def alive_nodes(self) -> frozenset[str]:
        nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
        return frozenset(n["NodeID"] for n in nodes if n.get("Alive"))

    def nodes(self, num_cpus: float, memory: int | None, actors: Iterable[str] = ()) -> Nodes:
        """The alive nodes and those that can host one partition actor (``num_cpus`` CPUs and
        ``memory`` bytes in total). The raylets of the nodes holding ``actors`` are probed:
        one that refuses a connection or does not accept it in time is left out (lost)."""
        table: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
        alive = {n["NodeID"]: n for n in table if n.get("Alive")}
        for node, info in alive.items():
            self._addresses[node] = (info["NodeManagerAddress"], int(info["NodeManagerPort"]))
        watched = ({self._node[a] for a in actors if a in self._node} | self.lost) & set(alive)
        self.lost = frozenset()  # a raylet that answers again, or a node Ray marked dead
        self._probe(watched)
        for node in sorted(self._reported & set(alive) - self.lost):
            logger.warning("the raylet of node %s accepts connections again", node[:8])
        self._reported = self.lost
        ok = {node: info for node, info in alive.items() if node not in self.lost}
        hosts = {
            node
            for node, info in ok.items()
            if info.get("Resources", {}).get("CPU", 0.0) >= num_cpus
            and (memory is None or info.get("Resources", {}).get("memory", 0.0) >= memory)
        }
        return Nodes(frozenset(ok), frozenset(hosts))


def _raylet_answers(host: str, port: int) -> bool:
    """Whether a raylet accepts a TCP connection within RAYLET_PROBE_TIMEOUT seconds."""
    try:
        with socket.create_connection((host, int(port)), timeout=RAYLET_PROBE_TIMEOUT):
            return True
    except OSError:
        return False


def cluster_capacity() -> list[NodeCapacity]:
    """Every live node's total and free resources (``{"CPU": 2.0, "memory": ...}``), as
    Ray's GCS last heard them from the nodes (within about a second)."""
    from ray._private.state import state

    nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
    alive = sorted(n["NodeID"] for n in nodes if n.get("Alive"))
    total = state.total_resources_per_node()
    free = state.available_resources_per_node()  # type: ignore[no-untyped-call]
    return [
        NodeCapacity(node, dict(total.get(node, {})), dict(free.get(node, {}))) for node in alive
    ]


def _gcs() -> Any:
    """Ray's GCS table records (protobuf; no type information)."""
    from ray.core.generated import gcs_pb2

    return gcs_pb2


def _accessor() -> Any:
    from ray._private.state import state

    return state._connect_and_get_accessor()


def _actor_info(actor_id: Any) -> Any:
    """The GCS actor table entry (ActorTableData) of an actor, or None."""
    raw = _accessor().get_actor_info(actor_id)
    return None if raw is None else _gcs().ActorTableData.FromString(raw)


def _node_id(actor: Any) -> str | None:
    """The node (hex id) an actor table entry places the actor on, if any."""
    if actor is None or not actor.address.node_id.strip(b"\x00"):
        return None
    node: str = actor.address.node_id.hex()
    return node


def _process_ended(actor_id: Any) -> bool:
    """Whether Ray confirms that the process of a dead actor has ended."""
    gcs_pb2 = _gcs()
    actor = _actor_info(actor_id)
    if actor is None or actor.state != gcs_pb2.ActorTableData.DEAD:
        return False
    worker_id = actor.address.worker_id
    if not worker_id.strip(b"\x00"):
        return True  # it never had a process
    raw = _accessor().get_worker_info(ray.WorkerID(worker_id))
    if raw is None:
        return False
    return not gcs_pb2.WorkerTableData.FromString(raw).is_alive


def _kill_quietly(handle: Any) -> None:
    try:
        ray.kill(handle)
    except Exception:
        pass
