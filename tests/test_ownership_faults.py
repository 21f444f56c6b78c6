"""Never two writers, under real faults: a hung partition actor (SIGSTOP), a killed coordinator
(SIGKILL) and its restart by Ray, in the orders an operator meets them (real Ray, real broker).

What is checked comes from the changelog itself: in every partition the writer epochs (header
``goka-ray.epoch``) never go down along the offsets, no key's count ever goes down (two owners
writing one partition would interleave their counts), and the last counts are at least the
clicks sent (at-least-once). At the end the configured number of partition actors is alive.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter, defaultdict

import cloudpickle
import kafka_helpers
import pytest
import ray
from kafka_helpers import ClickStream, read_records, wait_until

from goka_ray import codecs
from goka_ray.control.names import coordinator_name, worker_prefix
from goka_ray.control.status import GroupStatus
from goka_ray.examples import click_counter
from goka_ray.kafka.epochs import EPOCH_HEADER
from goka_ray.kafka.topics import TopicManager
from goka_ray.ray.processor import Processor

cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(kafka_helpers)

NAMESPACE = "goka-ray-ownership-faults"
PARTITIONS = 4
INT = codecs.Int()


@pytest.fixture
def group(kafka, unique, tmp_path, ray_local):  # type: ignore[no-untyped-def]
    topic = f"{unique}-clicks"
    graph = click_counter(f"{unique}-counter", topic)
    with TopicManager(kafka.bootstrap_servers) as topics:
        topics.ensure_stream(topic, PARTITIONS)
    config = {
        "storage_dir": str(tmp_path / "data"),
        "namespace": NAMESPACE,
        "groups": {graph.group: {"num_cpus": 0.1, "actors": 2}},
    }
    processor = Processor(kafka.bootstrap_servers, graph, config)
    processor.start()
    processor.wait_ready(120)
    yield processor, topic, graph
    try:
        processor.stop()
    except Exception:
        pass


def status_or_none(processor: Processor) -> GroupStatus | None:
    """The group's status, or None while the coordinator restarts."""
    try:
        return processor.status()
    except Exception:
        return None


def coordinator_pid(group: str) -> int:
    for actor in ray._private.state.actors().values():
        if actor["Name"] == coordinator_name(group) and actor["State"] == "ALIVE":
            return int(actor["Pid"])
    raise AssertionError(f"no live coordinator of {group}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie (exited, not yet reaped) is gone too
        return f.read().split()[2] != "Z"


def worker_actors(group: str) -> list[str]:
    return [n for n in ray.util.list_named_actors() if n.startswith(worker_prefix(group))]


class ChangelogCheck:
    """The changelog read back: epochs and counts along the offsets of each partition."""

    def __init__(self, brokers: str, table: str) -> None:
        self.epochs: dict[int, list[int]] = defaultdict(list)
        self.latest: dict[str, int] = {}
        self.decreases: list[tuple[str, int, int]] = []
        records = sorted(read_records(brokers, table, PARTITIONS), key=lambda r: (r[0], r[1]))
        for partition, _offset, key, value, headers in records:
            self.epochs[partition].append(int(headers[EPOCH_HEADER]))
            assert key is not None and value is not None
            user, count = key.decode(), INT.decode(value)
            if count < self.latest.get(user, 0):
                self.decreases.append((user, self.latest[user], count))
            self.latest[user] = count

    def epochs_seen(self) -> dict[int, list[int]]:
        """Per partition, the epochs in the order they appear (runs collapsed)."""
        out = {}
        for p, seq in sorted(self.epochs.items()):
            runs = [seq[0]]
            for e in seq[1:]:
                if e != runs[-1]:
                    runs.append(e)
            out[p] = runs
        return out

    def assert_one_writer_at_a_time(self) -> None:
        for p, seq in self.epochs.items():
            assert seq == sorted(seq), (
                f"partition {p}: writer epochs went back: {self.epochs_seen()}"
            )
        assert not self.decreases, f"counts went down (two writers): {self.decreases[:10]}"


def every_partition_processing(processor: Processor, total: int) -> GroupStatus:
    """The status once more than ``total`` clicks were processed and every partition's owner
    has processed (so written to the changelog under its epoch) at least one of them."""
    found: list[GroupStatus] = []

    def processing() -> bool:
        st = processor.status()
        found[:] = [st]
        return sum(p.processed for p in st.partitions) > total and all(
            p.processed > 0 and p.epoch > 0 for p in st.partitions
        )

    wait_until(processing, 60, f"every partition processing, {total} clicks in all")
    return found[0]


def wait_for_counts(brokers: str, table: str, truth: Counter[str]) -> ChangelogCheck:
    check: list[ChangelogCheck] = []

    def counted() -> bool:
        check[:] = [ChangelogCheck(brokers, table)]
        return all(check[0].latest.get(u, 0) >= n for u, n in truth.items())

    deadline = time.monotonic() + 120
    while not counted():
        assert time.monotonic() < deadline, "the counts did not reach the clicks sent"
        time.sleep(1)
    return check[0]


def test_a_hung_owner_and_a_restarted_coordinator_never_make_two_writers(kafka, group):
    """Issue 10: SIGSTOP a partition actor, SIGKILL the coordinator, SIGCONT 15 s later."""
    processor, topic, graph = group
    brokers = kafka.bootstrap_servers
    with ClickStream(brokers, topic, 100, 200, seed=10) as stream:
        before = every_partition_processing(processor, 500)
        victim = before.partitions[0]
        held = [p.partition for p in before.partitions if p.actor_name == victim.actor_name]
        assert victim.pid and len(held) == 2
        os.kill(victim.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        os.kill(coordinator_pid(graph.group), signal.SIGKILL)
        killed_at = time.monotonic()
        try:

            def replaced() -> bool:
                st = status_or_none(processor)
                return bool(st and st.ready) and all(
                    st.partitions[p].actor_name != victim.actor_name for p in held
                )

            wait_until(replaced, 120, "the hung actor's partitions to run on a new owner")
            recovered_in = time.monotonic() - killed_at
            time.sleep(max(0.0, stopped_at + 15 - time.monotonic()))
            victim_alive_at_sigcont = alive(victim.pid)
        finally:
            try:
                os.kill(victim.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        time.sleep(3)  # clicks still flow: a stale owner that woke up would write now
    truth = stream.truth
    check = wait_for_counts(brokers, graph.table_topic, truth)
    check.assert_one_writer_at_a_time()
    seen = check.epochs_seen()
    after = processor.status()
    for p in held:
        # the hung owner wrote under its epoch; only a newer one wrote after it
        hung = before.partitions[p].epoch
        assert hung in seen[p] and seen[p][-1] > hung, f"partition {p}: a new epoch, {seen[p]}"
        assert after.partitions[p].epoch == seen[p][-1]
    for p in set(range(PARTITIONS)) - set(held):
        answered = before.partitions[p].epoch
        assert seen[p] == [answered], "the owner that answered was adopted, with its epoch"
    wait_until(lambda: not alive(victim.pid), 30, "the hung process to be gone")
    assert len(worker_actors(graph.group)) == 2, worker_actors(graph.group)
    assert len({p.actor_name for p in after.partitions}) == 2
    print(
        f"\nhung owner + coordinator restart: epochs seen {seen}; {len(truth)} keys checked "
        f"(counts >= truth, {sum(check.latest.values()) - truth.total()} duplicates); "
        f"running again {recovered_in:.1f}s after the coordinator was killed; hung process "
        f"{'alive' if victim_alive_at_sigcont else 'gone'} at SIGCONT"
    )


def test_a_coordinator_killed_during_a_live_scale_finishes_it_with_one_writer(kafka, group):
    processor, topic, graph = group
    brokers = kafka.bootstrap_servers
    with ClickStream(brokers, topic, 100, 200, seed=20) as stream:
        wait_until(lambda: sum(p.processed for p in processor.status().partitions) > 500, 60)
        assert processor.scale(actors=4)
        time.sleep(0.5)  # the new actors are being placed and recover
        os.kill(coordinator_pid(graph.group), signal.SIGKILL)
        killed_at = time.monotonic()

        def scaled() -> bool:
            st = status_or_none(processor)
            return bool(st and st.ready) and len({p.actor_name for p in st.partitions}) == 4

        wait_until(scaled, 120, "the scale to finish on four actors")
        recovered_in = time.monotonic() - killed_at
        time.sleep(2)
    truth = stream.truth
    check = wait_for_counts(brokers, graph.table_topic, truth)
    check.assert_one_writer_at_a_time()
    wait_until(lambda: len(worker_actors(graph.group)) == 4, 30, "four partition actors")
    info = ray.get(processor._handle().describe.remote(), timeout=30)
    assert info.config.group(graph.group).actors == 4, "the restarted coordinator kept the scale"
    print(
        f"\ncoordinator killed during a scale 2 -> 4: epochs seen {check.epochs_seen()}; "
        f"{len(truth)} keys checked; scaled {recovered_in:.1f}s after the coordinator was killed"
    )


@ray.remote(num_cpus=0)
class RefusingCoordinator:
    """Stands in for a coordinator that gave the partition to another owner at some point."""

    def __init__(self) -> None:
        self.refusing = False
        self.renewals: list[tuple[int, int, str]] = []

    def renew(self, partition: int, epoch: int, owner: str) -> bool:
        self.renewals.append((partition, epoch, owner))
        return not self.refusing

    def refuse(self) -> None:
        self.refusing = True

    def seen(self) -> list[tuple[int, int, str]]:
        return self.renewals


def test_an_actor_whose_lease_is_refused_writes_no_more_and_stops_itself(
    kafka, unique, tmp_path, ray_local
):
    from goka_ray.actors.partition import PartitionActor, WorkerSpec
    from goka_ray.kafka.runner import RunnerConfig

    brokers = kafka.bootstrap_servers
    topic = f"{unique}-clicks"
    graph = click_counter(f"{unique}-counter", topic)
    with TopicManager(brokers) as topics:
        topics.ensure_stream(topic, 1)
        topics.ensure_group_topics(graph)
    coordinator = RefusingCoordinator.options(
        name=coordinator_name(graph.group), namespace=NAMESPACE
    ).remote()
    name = f"{worker_prefix(graph.group)}stale"
    spec = WorkerSpec(
        brokers=brokers,
        graph=graph,
        storage_dir=str(tmp_path / "data"),
        runner_config=RunnerConfig(batch_size=100),
        coordinator_name=coordinator_name(graph.group),
        namespace=NAMESPACE,
        lease_duration=2.0,
    )
    actor = (
        ray.remote(PartitionActor)
        .options(name=name, namespace=NAMESPACE, max_concurrency=16, num_cpus=0.1)
        .remote(spec, name)
    )
    try:
        actor.assign.remote(0, 1)
        wait_until(lambda: [s.state for s in ray.get(actor.status.remote())] == ["recovered"], 60)
        assert ray.get(actor.go.remote(0, 1))
        with ClickStream(brokers, topic, 50, 20, seed=30):
            wait_until(lambda: ray.get(actor.status.remote())[0].processed > 100, 60)
            assert (0, 1, name) in ray.get(coordinator.seen.remote()), "renewed under its name"
            ray.get(coordinator.refuse.remote())
            refused_at = time.monotonic()

            def stopped() -> bool:
                try:
                    ray.get(actor.ping.remote(), timeout=5)
                except ray.exceptions.RayActorError:
                    return True
                return False

            wait_until(stopped, 30, "the fenced actor to stop itself")
            stopped_in = time.monotonic() - refused_at
            written = len(read_records(brokers, graph.table_topic, 1))
            time.sleep(2)  # clicks still flow: nothing more is written for the partition
        assert len(read_records(brokers, graph.table_topic, 1)) == written
        print(f"\nrefused lease: the actor stopped itself {stopped_in:.1f}s after the refusal")
    finally:
        ray.kill(coordinator)
        try:
            ray.kill(actor)
        except Exception:
            pass
