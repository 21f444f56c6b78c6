"""GroupCoordinator: one named Ray actor per processor group, the shell around its policy.

It is the only one that decides who owns a partition, and it decides nothing itself: the
rules live in :class:`~goka_ray.control.policy.CoordinatorPolicy` (a pure state machine), and
every Ray call in :class:`~goka_ray.actors.group_actors.GroupActors`. The coordinator runs the
status rounds (every actor asked at once, one deadline), feeds what it saw to the policy, and
carries out the actions the policy returns, in order. A round runs every ``watch_interval``,
and at once when a partition actor nudges it (a partition recovered and waits for ``go``, or
started processing), so a start, move or failover, and the status that shows it, does not
wait for the next tick.

Invariants (never two writers, whatever crashes, hangs or restarts, in any order):
- Epochs survive the coordinator: before it hands out any epoch it restores the group's epoch
  record from Ray's GCS key-value store and raises it to the highest epoch header in the
  group's changelog, and every epoch is recorded before an actor hears of it.
- It answers a lease renewal only for the current epoch of a partition and from the actor that
  holds it, and only once it has adopted what a previous coordinator left (Ray delivers no
  call before ``__init__`` returns, and adoption runs there).
- A restarted coordinator (or one that finds actors of the group) adopts only the actors that
  answer, kills the others, waits out a full lease before a partition without an adopted owner
  gets a new one (or until Ray confirms every killed actor's process ended, where only those
  could hold it), promotes standbys that answer, and kills every actor it does not track, so
  the group ends with the configured actors.

Code and resources:
- The group's graph and its fingerprint are recorded in the GCS before any actor runs them (at
  a start, and at an upgrade before anything moves); a restarted coordinator runs the recorded
  graph, not the one Ray re-creates it with. A start with another fingerprint never attaches:
  it raises CodeChangedError and changes nothing.
- A start, a scale and an upgrade check the actors they would place against the cluster's
  free resources first (:mod:`goka_ray.control.admission`) and raise
  InsufficientResourcesError before anything moves, unless the group's
  ``on_insufficient_resources`` is ``wait``. Resources freed a moment ago (a group just
  stopped) are waited for a few seconds before that.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import ray

from goka_ray.actors.collector import settle_collector
from goka_ray.actors.group_actors import GroupActors, Nodes
from goka_ray.actors.partition import LOG_FORMAT, WorkerSpec
from goka_ray.control.actions import (
    Action,
    ActorResources,
    Assign,
    Follow,
    Go,
    Kill,
    Observation,
    Reach,
    Release,
    Retire,
    Role,
    Spawn,
)
from goka_ray.control.admission import explain, explain_pending, shortfall, wait_for_fit
from goka_ray.control.fencing import LEASE_DURATION, EpochTable
from goka_ray.control.names import coordinator_name, standby_prefix, worker_prefix
from goka_ray.control.policy import CoordinatorPolicy
from goka_ray.control.status import GroupState, GroupStatus
from goka_ray.control.totals import PartitionTotals
from goka_ray.core.config import Config
from goka_ray.core.fingerprint import GraphFingerprint, fingerprint, upgrade_problems
from goka_ray.core.graph import GroupGraph
from goka_ray.errors import CodeChangedError, InsufficientResourcesError, UpgradeError
from goka_ray.kafka.epochs import changelog_epochs
from goka_ray.kafka.runner import RunnerConfig
from goka_ray.kafka.topics import TopicConfigMismatch, TopicManager

logger = logging.getLogger(__name__)

#: seconds a start, scale or upgrade waits for resources that are being freed before it fails
ADMISSION_GRACE = 5.0


@dataclass(frozen=True)
class GroupSpec:
    """What a coordinator is created from (Ray re-creates it from the same spec)."""

    brokers: str
    graph: GroupGraph
    config: Config
    lease_duration: float = LEASE_DURATION
    watch_interval: float = 0.5
    #: how long one status round waits for the answers of all actors (seconds)
    status_timeout: float = 3.0
    #: called in the partition actors with an Assignment (see Processor's on_rebalance)
    on_rebalance: Callable[[Any], None] | None = None
    #: the graph's fingerprint, as the driver computed it (None: computed here)
    fingerprint: GraphFingerprint | None = None


class GroupCoordinator:
    """Assigns, watches, replaces and scales the partition actors of one group."""

    def __init__(self, spec: GroupSpec) -> None:
        # no lease an earlier coordinator granted outlives this by more than a lease: Ray
        # starts a coordinator again only once it considers the old one dead
        self._started = time.monotonic()
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
        self.spec = spec
        self.group = spec.graph.group
        self.config = spec.config
        #: the graph the group runs, and its fingerprint (changed by an upgrade)
        self.graph = spec.graph
        self.fingerprint = spec.fingerprint or fingerprint(spec.graph)
        self.actors = GroupActors(self.config.namespace, self.group, self._worker_spec)
        self._prefixes = (worker_prefix(self.group), standby_prefix(self.group))
        workers = self.actors.find(self._prefixes[0])
        standbys = self.actors.find(self._prefixes[1])
        # a restart, or actors of the group left by an earlier coordinator: adopt them, with
        # the config changes made live before (kept in the GCS, like the epochs)
        adopting = bool(workers) or ray.get_runtime_context().was_current_actor_reconstructed
        if adopting:
            logger.warning(
                "group %s: coordinator started again on node %s; adopting %d actors",
                self.group,
                ray.get_runtime_context().get_node_id()[:8],
                len(workers) + len(standbys),
            )
        self._changes: dict[str, Any] = self.actors.load_changes() if adopting else {}
        if self._changes:
            self.config = self.config.with_group(self.group, **self._changes)
        if adopting and (recorded := self.actors.load_code()) is not None:
            self.graph, self.fingerprint = recorded  # an upgrade may have replaced the spec's
        # the epoch record lives in the GCS too: it outlives this actor
        self.epochs = EpochTable(spec.lease_duration, store=self.actors)
        self.policy = CoordinatorPolicy(
            self.group,
            self.config.group(self.group),
            self.epochs,
            code=self.fingerprint.short,
            totals=PartitionTotals(self.actors),
        )
        #: why actors wait to be placed (for status; None: none waits)
        self._waiting: str | None = None
        #: settings of existing topics that do not fit their role, found at start (warnings)
        self._topic_warnings: list[str] = []
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        #: set by :meth:`nudge`: the next status round runs now, not at the next tick
        self._wake = threading.Event()
        self._watch: threading.Thread | None = None
        if adopting:
            self._adopt(workers, standbys)
        else:
            for name in standbys:  # nothing to stand by for yet: start() places new ones
                self.actors.kill(name)
        settle_collector()

    # -- set-up -------------------------------------------------------------------------------

    def _worker_spec(self) -> WorkerSpec:
        cfg = self.config.group(self.group)
        return WorkerSpec(
            brokers=self.spec.brokers,
            graph=self.graph,
            storage_dir=self.config.storage_dir,
            runner_config=RunnerConfig(
                batch_size=cfg.batch_size,
                initial_offset=cfg.initial_offset,
                processing_guarantee=cfg.processing_guarantee,
                partitioner=cfg.partitioner,
                max_message_bytes=cfg.max_message_bytes,
                fetch_wait_max_ms=cfg.fetch_wait_max_ms,
                fetch_min_bytes=cfg.fetch_min_bytes,
                consumer_config=self.config.consumer_config(),
                producer_config=self.config.producer_config(),
            ),
            coordinator_name=coordinator_name(self.group),
            namespace=self.config.namespace,
            lease_duration=self.spec.lease_duration,
            on_rebalance=self.spec.on_rebalance,
            code=self.fingerprint.short,
        )

    def start(self, given: GraphFingerprint | None = None) -> int:
        """Create topics, check co-partitioning and resources, place the actors; returns the
        partition count.

        A second call (e.g. from another driver) attaches to the running group if ``given``
        (the caller's fingerprint) is the one the group runs, else raises CodeChangedError.
        InsufficientResourcesError if the actors do not fit (see the module docstring).
        """
        with self._lock:
            if self._watch is not None:
                if given is not None and given.digest != self.fingerprint.digest:
                    raise self._code_changed(given)
                return self.policy.partitions
            mismatches: list[TopicConfigMismatch] = []
            created: set[str] = set()
            with TopicManager(self.spec.brokers) as topics:
                partitions = topics.ensure_group_topics(
                    self.graph,
                    self.config.group(self.group).topic_config_mismatch,
                    mismatches,
                    created,
                )
            self._topic_warnings = [m.describe(self.spec.brokers) for m in mismatches]
            self._admit(self.policy.start_demand(partitions), "start")
            self.actors.save_code(self.graph, self.fingerprint)  # recorded before it runs
            self.actors.save_changes({})  # a new start runs the config it was given
            self.policy.totals.clear()
            self._restore_epochs(changelog=self.graph.table_topic not in created)
            nodes = self._nodes()
            self._execute(self.policy.start(partitions, nodes.alive, nodes.hosts))
            self._start_watch()
            return partitions

    def _nodes(self, actors: Iterable[str] = ()) -> Nodes:
        cfg = self.config.group(self.group)
        return self.actors.nodes(cfg.num_cpus, cfg.memory, actors)

    def _code_changed(self, given: GraphFingerprint) -> CodeChangedError:
        changes = self.fingerprint.changes(given) or ["code outside the graph's edges"]
        if self.policy.failed:
            todo = (
                f"The group has failed ({self.policy.error}): stop it (`goka-ray stop "
                f"{self.group}`) and run it again with the new code."
            )
        else:
            todo = (
                "Nothing was changed: the group goes on with its code. To move it to the new "
                "code live, one actor at a time with no message lost or applied twice: "
                "`goka-ray run MODULE:GRAPH --upgrade` or Processor.upgrade(graph). To start "
                f"over: `goka-ray stop {self.group}`, then run it again."
            )
        return CodeChangedError(
            f"group {self.group!r} runs other code (code {self.fingerprint.short}; the graph "
            f"given is code {given.short}): {', '.join(changes)}. {todo}",
            running=self.fingerprint.short,
            given=given.short,
            changes=tuple(changes),
        )

    def _admit(
        self, demand: Sequence[ActorResources], action: str, policy: str | None = None
    ) -> None:
        """Raise InsufficientResourcesError unless ``demand`` fits the free resources (waiting
        up to ADMISSION_GRACE for resources being freed), or only log it if ``policy`` (the
        group's ``on_insufficient_resources`` by default) is ``wait``."""
        short = wait_for_fit(demand, self.actors.capacity, ADMISSION_GRACE)
        if short is None:
            return
        message = explain(self.group, short, action)
        if (policy or self.config.group(self.group).on_insufficient_resources) == "wait":
            logger.warning("%s; waiting for them (on_insufficient_resources: wait)", message)
            return
        raise InsufficientResourcesError(message)

    def _restore_epochs(
        self, granted_before: float | None = None, *, changelog: bool = True
    ) -> None:
        """Load the epoch record and raise it to the changelog's highest epoch headers (not
        read if ``changelog`` is False: a table topic created a moment ago holds no record)."""
        floors: dict[int, int] = {}
        if self.graph.persist is not None and changelog:
            floors = changelog_epochs(
                self.spec.brokers,
                self.graph.table_topic,
                consumer_config=self.config.consumer_config(),
            )
        records = self.epochs.restore(floors, granted_before=granted_before)
        logger.info(
            "group %s: epochs restored (record %s, changelog %s)",
            self.group,
            {p: r.current for p, r in sorted(records.items())},
            dict(sorted(floors.items())),
        )

    def _adopt(self, workers: list[str], standbys: list[str]) -> None:
        """Take over what an earlier coordinator of the group left (see the module docstring)."""
        roles = {n: Role.WORKER for n in workers} | {n: Role.STANDBY for n in standbys}
        # a longer deadline than a watch round: an actor that does not answer is killed now
        reports = self.actors.status_round(roles, 2 * self.spec.status_timeout)
        found = {n: (role, reports[n]) for n, role in roles.items() if n in reports}
        with TopicManager(self.spec.brokers) as topics:
            partitions = topics.check_copartitioned(self.graph)
        self._restore_epochs(granted_before=self._started)
        nodes = self._nodes(roles)
        self._execute(self.policy.adopt(partitions, found, nodes.alive, nodes.hosts))
        self._start_watch()

    def _start_watch(self) -> None:
        self._watch = threading.Thread(target=self._watch_loop, daemon=True, name="watch")
        self._watch.start()

    # -- the watch loop -----------------------------------------------------------------------

    def _watch_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.spec.watch_interval)
            self._wake.clear()  # a nudge during the round below brings the next one forward
            if self._stopping.is_set():
                return
            try:
                if self.policy.state in (GroupState.FAILED, GroupState.STOPPED):
                    return
                self._tick()
            except Exception:
                logger.exception("group %s: watch loop error", self.group)

    def _tick(self) -> None:
        with self._lock:
            names = list(self.policy.actors)
            zombies = list(self.policy.zombies)
        # the round waits on the actors; scale, stop and status calls are not held up by it
        nodes = self._nodes([*names, *zombies])
        reports = self.actors.status_round(names, self.spec.status_timeout, nodes.alive)
        nodes = nodes.without(self.actors.lost)  # lost while the round waited
        observation = Observation(
            reports,
            alive_nodes=nodes.alive,
            gone=self.actors.confirmed_gone(zombies),
            named=self.actors.named(*self._prefixes),
            hosts=nodes.hosts,
        )
        pending = [n for n, r in reports.items() if r.reach is Reach.PENDING]
        waiting = self._explain_waiting(pending) if pending else None
        with self._lock:
            self._waiting = waiting
            self._execute(self.policy.observe(observation))
            self._keep_autoscaled_count()

    def _keep_autoscaled_count(self) -> None:
        """Record the autoscaler's actor count with the live changes: a restarted coordinator
        goes on from it."""
        actors = self.policy.target_actors
        if actors is None or self._changes.get("actors") == actors:
            return
        self._changes = {**self._changes, "actors": actors}
        self.actors.save_changes(self._changes)

    def _explain_waiting(self, pending: list[str]) -> str:
        """Why these actors are not placed: what they ask against what is free."""
        cfg = self.config.group(self.group)
        demand = [ActorResources(cfg.num_cpus, cfg.memory)] * len(pending)
        try:
            short = shortfall(demand, self.actors.capacity())
        except Exception as exc:  # the GCS did not answer: say what is known
            logger.debug("no resources of the cluster: %s", exc)
            short = None
        return explain_pending(len(pending), short)

    def _execute(self, actions: Iterable[Action]) -> None:
        """Carry out the policy's actions in order (an outcome may bring more actions)."""
        queue = deque(actions)
        while queue:
            action = queue.popleft()
            try:
                queue.extend(self._perform(action))
            except Exception:
                logger.exception("group %s: %s failed", self.group, action)

    def _perform(self, action: Action) -> list[Action]:
        match action:
            case Spawn():
                self.actors.create(action)
            case Assign(actor, partition, epoch):
                self.actors.assign(actor, partition, epoch)
            case Follow(actor, partition):
                self.actors.follow(actor, partition)
            case Release(actor, partition):
                final = None
                try:
                    stopped, final = self.actors.release(actor, partition)
                except Exception as exc:
                    logger.warning(
                        "group %s: release of %d by %s failed (%s)",
                        self.group,
                        partition,
                        actor,
                        exc,
                    )
                    stopped = False
                return self.policy.released(actor, partition, stopped, final)
            case Go(actor, partition, epoch):
                accepted = self.actors.go(actor, partition, epoch)
                return self.policy.went(actor, partition, epoch, accepted)
            case Retire(names):
                self.policy.retired(names, self.actors.retire(names))
            case Kill(actor):
                self.actors.kill(actor)
        return []

    # -- the API the driver and the partition actors call -------------------------------------

    def renew(self, partition: int, epoch: int, owner: str | None = None) -> bool:
        """Lease renewal from partition actor ``owner``: does it hold the current ``epoch``?"""
        return self.policy.renew(partition, epoch, owner)

    def status(self) -> GroupStatus:
        with self._lock:
            status = self.policy.status(self._waiting)
        if not self._topic_warnings:
            return status
        return replace(status, warnings=[*self._topic_warnings, *status.warnings])

    def failure(self) -> BaseException | None:
        return self.policy.error

    def scale(self, changes: dict[str, Any]) -> bool:
        """Apply a config change live; returns False when nothing needs to move."""
        with self._lock:
            config = self.config.with_group(self.group, **changes)
            cfg = config.group(self.group)
            if self.policy.state in (GroupState.RUNNING, GroupState.SCALING):
                self._admit(self.policy.scale_demand(cfg), "scale", cfg.on_insufficient_resources)
                # recorded first: a coordinator restarted in the middle carries the change on
                changes = {
                    k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v  # type: ignore[arg-type]
                    for k, v in changes.items()
                }
                self.actors.save_changes({**self._changes, **changes})
                self._changes = {**self._changes, **changes}
            actions = self.policy.scale(config.group(self.group))
            self.config = config
            if actions is None:
                return False
            self._execute(actions)
            return True

    def upgrade(self, graph: GroupGraph, given: GraphFingerprint) -> bool:
        """Move the group to ``graph`` live, one actor at a time (see the policy); False if
        it runs that code already. UpgradeError (nothing changed) if the new graph changes
        the table's codec, adds or drops the table, or names topics whose partition counts
        differ from the group's; InsufficientResourcesError if one more actor does not fit.
        """
        with self._lock:
            if self._watch is None:
                raise UpgradeError(f"group {self.group!r} is not started; start it instead")
            if given.digest == self.fingerprint.digest and not self.policy.upgrading:
                return False
            problems = upgrade_problems(self.fingerprint, given)
            if not problems:
                with TopicManager(self.spec.brokers) as topics:
                    partitions = topics.ensure_group_topics(
                        graph, self.config.group(self.group).topic_config_mismatch
                    )
                if partitions != self.policy.partitions:
                    problems.append(
                        f"its topics have {partitions} partitions, the running group "
                        f"{self.policy.partitions}"
                    )
            if problems:
                raise UpgradeError(
                    f"group {self.group!r} cannot be upgraded in place to code {given.short}: "
                    f"{'; '.join(problems)}. Nothing was changed. Keep the table's codec and "
                    "the topics, or run the new code as a new group (another name) that "
                    "rebuilds its table from the inputs."
                )
            self._admit(self.policy.upgrade_demand(), "upgrade")
            self.actors.save_code(graph, given)  # recorded first: a restart goes on with it
            logger.info(
                "group %s: upgrading from code %s to %s (%s)",
                self.group,
                self.fingerprint.short,
                given.short,
                ", ".join(self.fingerprint.changes(given)) or "same edges",
            )
            self.graph, self.fingerprint = graph, given
            actions = self.policy.upgrade(given.short) or []
            self._execute(actions)
            return True

    def nudge(self) -> None:
        """A partition actor has news (a partition recovered and waits for ``go``, or started
        processing): the next status round runs at once instead of at the next tick
        (``watch_interval``). Nudges during a round bring one more round, not one each."""
        self._wake.set()

    def stop(self) -> None:
        """Stop every partition actor gracefully (commit and close), then forget them."""
        with self._lock:
            self._stopping.set()
            self._wake.set()
            self._execute(self.policy.stop())
            self.actors.save_changes({})
            self.actors.forget_code()

    def ping(self) -> str:
        return str(self.policy.state)

    def visit_all(self, name: str, meta: Any, timeout: float | None = None) -> int:
        """Run visitor ``name`` on every partition (each inside its processing loop)."""
        with self._lock:
            targets = self.policy.visit_targets()
        return self.actors.visit(targets, name, meta, timeout)

    def describe(self) -> GroupInfo:
        """Brokers, config and table codec of this group, for drivers that attach to it."""
        graph = self.graph
        persist = graph.persist
        return GroupInfo(
            group=self.group,
            brokers=self.spec.brokers,
            config=self.config,
            table=graph.table_topic if persist is not None else None,
            table_codec=persist.codec if persist is not None else None,
            partitions=self.policy.partitions,
            fingerprint=self.fingerprint,
        )


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
    #: the fingerprint of the graph and code the group runs
    fingerprint: GraphFingerprint | None = None
