"""GroupActors: every Ray call the coordinator makes, in one class.

The coordinator's decisions live in :mod:`goka_ray.control.policy` (no Ray); this class is
how they touch the cluster: it creates, finds, calls, waits on and kills the group's partition
actors, and reads what Ray knows about them (live nodes, actor states). It keeps one handle
per actor name. Calls that only start work (assign, follow) do not wait; calls whose outcome
the policy needs (release, go) wait with a timeout; a status round asks every actor at once
and waits on all answers together until one deadline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, RayActorError

from goka_ray.actors.partition import PartitionActor, WorkerSpec
from goka_ray.control.policy import ActorReport, Reach, Spawn
from goka_ray.control.status import PartitionState, PartitionStatus

__all__ = ["GroupActors"]

logger = logging.getLogger(__name__)

#: Ray's actor states that mean "not started yet" (not hung: waiting for resources or a process)
_NOT_STARTED = {"DEPENDENCIES_UNREADY", "PENDING_CREATION"}


class GroupActors:
    """The Ray side of one group's partition actors (see the module docstring)."""

    def __init__(self, namespace: str, worker_spec: Callable[[], WorkerSpec]) -> None:
        self.namespace = namespace
        self._worker_spec = worker_spec
        self._handles: dict[str, Any] = {}

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

            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(res.node, soft=True)
        elif res.spread:
            options["scheduling_strategy"] = "SPREAD"
        actor_class: Any = ray.remote(PartitionActor)
        self._handles[spawn.name] = actor_class.options(**options).remote(
            self._worker_spec(), spawn.name
        )

    def find(self, prefix: str) -> list[str]:
        """Names of the live named actors of this namespace starting with ``prefix``."""
        found = []
        for name in ray.util.list_named_actors(all_namespaces=False):
            if not name.startswith(prefix):
                continue
            try:
                self._handles[name] = ray.get_actor(name, namespace=self.namespace)
            except ValueError:  # gone meanwhile
                continue
            found.append(name)
        return found

    # -- calls --------------------------------------------------------------------------------

    def assign(self, name: str, partition: int, epoch: int) -> None:
        self._handles[name].assign.remote(partition, epoch)

    def follow(self, name: str, partition: int) -> None:
        self._handles[name].follow.remote(partition)

    def release(self, name: str, partition: int, timeout: float = 90.0) -> bool:
        """True once the actor confirmed the partition stopped; raises if it cannot say."""
        return bool(ray.get(self._handles[name].release.remote(partition), timeout=timeout))

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

    def retire(self, names: Iterable[str], timeout: float = 60.0) -> None:
        """Stop these actors gracefully, all at once, then kill them."""
        handles = {n: self._handles.pop(n) for n in names if n in self._handles}
        refs = [h.shutdown.remote() for h in handles.values()]
        try:
            ray.get(refs, timeout=timeout)
        except Exception as exc:
            logger.warning("shutting down %s: %s", sorted(handles), exc)
        for handle in handles.values():
            _kill_quietly(handle)

    def kill(self, name: str) -> None:
        handle = self._handles.pop(name, None)
        if handle is not None:
            _kill_quietly(handle)

    # -- observing ----------------------------------------------------------------------------

    def status_round(self, names: Iterable[str], timeout: float) -> dict[str, ActorReport]:
        """Ask every named actor for its statuses at once; wait at most ``timeout`` for all.

        Actors that did not answer are told apart by what Ray knows of them (not started
        yet, alive but silent, dead). The errors of partitions reported as failed are asked
        for in a second round.
        """
        refs = {n: self._handles[n].status.remote() for n in names if n in self._handles}
        if not refs:
            return {}
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout)
        done = set(ready)
        reports: dict[str, ActorReport] = {}
        for name, ref in refs.items():
            if ref not in done:
                reports[name] = ActorReport(self._unanswered(name))
                continue
            try:
                statuses: list[PartitionStatus] = ray.get(ref)
            except ActorUnavailableError:  # a transient loss of contact, not a death
                reports[name] = ActorReport(Reach.SILENT)
            except RayActorError:
                reports[name] = ActorReport(Reach.DEAD)
            else:
                reports[name] = ActorReport(Reach.ANSWERED, tuple(statuses))
        return self._with_failures(reports, timeout)

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
            reports[name] = ActorReport(report.reach, report.statuses, failed)
        return reports

    def _unanswered(self, name: str) -> Reach:
        """Why an actor did not answer, as far as Ray knows."""
        state = self._ray_state(name)
        if state in _NOT_STARTED:
            return Reach.PENDING
        if state == "DEAD":
            return Reach.DEAD
        return Reach.SILENT

    def _ray_state(self, name: str) -> str | None:
        handle = self._handles.get(name)
        if handle is None:
            return None
        try:
            info: dict[str, Any] = ray._private.state.actors(handle._actor_id.hex())
        except Exception as exc:  # the GCS did not answer: judge by the silence alone
            logger.debug("no actor state for %s: %s", name, exc)
            return None
        state = info.get("State")
        return state if isinstance(state, str) else None

    def alive_nodes(self) -> frozenset[str]:
        nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
        return frozenset(n["NodeID"] for n in nodes if n.get("Alive"))


def _kill_quietly(handle: Any) -> None:
    try:
        ray.kill(handle)
    except Exception:
        pass
