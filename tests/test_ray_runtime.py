"""The Ray runtime end to end: real local Ray, real local broker, real LevelDB."""

from __future__ import annotations

import sys
import time
from collections import Counter

import cloudpickle
import kafka_helpers
import pytest
import ray
from kafka_helpers import ClickStream, produce, produce_clicks, wait_until

from goka_ray import Context, Input, Persist, ProcessingError, codecs, define_group
from goka_ray.core.partitioner import MURMUR2
from goka_ray.examples import click_counter
from goka_ray.kafka.clients import make_consumer
from goka_ray.kafka.topics import TopicManager
from goka_ray.ray.processor import Processor
from goka_ray.ray.view import View

# callbacks defined in test modules travel to Ray workers by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(kafka_helpers)

PARTITIONS = 4
INT = codecs.Int()
NAMESPACE = "goka-ray-tests"


@pytest.fixture
def group_setup(kafka, unique, tmp_path, ray_local):  # type: ignore[no-untyped-def]
    topic = f"{unique}-clicks"
    graph = click_counter(f"{unique}-counter", topic)
    with TopicManager(kafka.bootstrap_servers) as topics:
        topics.ensure_stream(topic, PARTITIONS)
    config = {
        "storage_dir": str(tmp_path),
        "namespace": NAMESPACE,
        "groups": {graph.group: {"num_cpus": 0.1}},
    }
    processors: list[Processor] = []
    views: list[View] = []

    def make(**group_config):  # type: ignore[no-untyped-def]
        cfg = {**config, "groups": {graph.group: {"num_cpus": 0.1, **group_config}}}
        p = Processor(kafka.bootstrap_servers, graph, cfg)
        processors.append(p)
        return p

    def view():  # type: ignore[no-untyped-def]
        v = View(kafka.bootstrap_servers, graph.table_topic, INT, config)
        views.append(v)
        return v

    yield graph, topic, make, view
    for v in views:
        v.stop()
    for p in processors:
        p.stop()


def counts_via(view: View, users: list[str]) -> dict[str, int]:
    return {u: n for u, n in view.get_many(users).items() if n is not None}


def wait_counts(view: View, truth: Counter[str], timeout: float = 90) -> None:
    wait_until(lambda: counts_via(view, list(truth)) == dict(truth), timeout, "view to match")


def test_clicks_on_four_partition_actors_read_through_a_view(kafka, group_setup):
    graph, topic, make, make_view = group_setup
    truth, _ = produce_clicks(kafka.bootstrap_servers, topic, 4_000, 200)
    processor = make()
    processor.start()
    status = processor.wait_ready(120)
    assert len({p.actor_name for p in status.partitions}) == PARTITIONS
    assert all(p.pid and p.node_id for p in status.partitions)

    view = make_view().start()
    view.wait_ready(60)
    wait_counts(view, truth)
    assert len(view) == len(truth)
    assert dict(view.items()) == dict(truth)
    assert [k for k, _ in view.items()] == sorted(truth)

    @ray.remote
    def read_in_task(v: View, users: list[str]) -> dict[str, int]:
        return v.get_many(users)

    assert ray.get(read_in_task.remote(view, list(truth))) == dict(truth)
    final = processor.status()
    assert sum(p.keys for p in final.partitions) == len(truth)
    assert sum(p.offsets.get(topic, 0) for p in final.partitions) == 4_000


def test_killed_partition_actor_is_replaced_and_counts_stay_correct(kafka, group_setup):
    graph, topic, make, make_view = group_setup
    brokers = kafka.bootstrap_servers
    processor = make()
    processor.start()
    processor.wait_ready(120)
    view = make_view().start()
    with ClickStream(brokers, topic, 200, 100) as stream:
        time.sleep(2)
        victim = processor.status().partitions[1]
        ray.kill(ray.get_actor(victim.actor_name, namespace=NAMESPACE))
        wait_until(lambda: processor.status().partitions[1].restarts == 1, 60, "a restart")
        time.sleep(1)
    truth = stream.truth
    processor.wait_ready(120)
    status = processor.status()
    assert status.partitions[1].actor_name != victim.actor_name
    assert [p.restarts for p in status.partitions] == [0, 1, 0, 0]
    view.wait_ready(60)
    # at-least-once: nothing lost; duplicates only from batches in flight at the kill
    wait_until(lambda: all(n >= truth[u] for u, n in _all(view, truth).items()), 90, "no loss")
    counts = _all(view, truth)
    assert sum(counts.values()) - truth.total() <= 5000


def _all(view: View, truth: Counter[str]) -> dict[str, int]:
    got = view.get_many(list(truth))
    return {u: (n or 0) for u, n in got.items()}


def test_restarted_coordinator_adopts_live_partition_actors(kafka, group_setup):
    graph, topic, make, make_view = group_setup
    brokers = kafka.bootstrap_servers
    processor = make()
    processor.start()
    before = processor.wait_ready(120)
    coordinator = ray.get_actor(f"goka-ray/{graph.group}/coordinator", namespace=NAMESPACE)
    ray.kill(coordinator, no_restart=False)
    truth, _ = produce_clicks(brokers, topic, 2_000, 100)
    wait_until(lambda: _ready(processor), 60, "coordinator back")
    after = processor.wait_ready(60)
    assert [p.actor_name for p in after.partitions] == [p.actor_name for p in before.partitions]
    prefix = f"goka-ray/{graph.group}/worker-"
    assert len([n for n in ray.util.list_named_actors() if n.startswith(prefix)]) == PARTITIONS
    view = make_view().start()
    wait_counts(view, truth)


def _ready(processor: Processor) -> bool:
    try:
        return processor.status().ready
    except Exception:
        return False


def test_killed_view_actor_recovers_its_copy(kafka, group_setup):
    graph, topic, make, make_view = group_setup
    truth, _ = produce_clicks(kafka.bootstrap_servers, topic, 1_000, 50)
    processor = make()
    processor.start()
    processor.wait_ready(120)
    view = make_view().start()
    wait_counts(view, truth)
    ray.kill(view._actors[0], no_restart=False)
    assert counts_via(view, list(truth)) is not None  # served again (retried) after restart
    view.wait_ready(60)
    wait_counts(view, truth)


def test_live_scale_from_one_actor_to_four_and_back_never_has_two_writers(kafka, group_setup):
    graph, topic, make, make_view = group_setup
    brokers = kafka.bootstrap_servers
    processor = make(actors=1)
    processor.start()
    status = processor.wait_ready(120)
    assert len({p.actor_name for p in status.partitions}) == 1
    with ClickStream(brokers, topic, 100, 80, seed=1000) as stream:
        time.sleep(1)
        assert processor.scale(actors=4)
        status = processor.wait_scaled(120)
        assert len({p.actor_name for p in status.partitions}) == 4
        time.sleep(1)
        assert processor.scale(actors=1)
        status = processor.wait_scaled(120)
        assert len({p.actor_name for p in status.partitions}) == 1
        time.sleep(1)
    truth = stream.truth
    view = make_view().start()
    wait_counts(view, truth, 120)  # graceful hand-overs: exactly the truth
    assert [p.restarts for p in processor.status().partitions] == [0] * PARTITIONS

    # fencing: in each changelog partition the writer epochs never go back
    consumer = make_consumer(brokers, f"{graph.group}-epochs")
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    consumer.assign([TopicPartition(graph.table_topic, p, OFFSET_BEGINNING) for p in range(4)])
    epochs: dict[int, list[int]] = {}
    for _ in range(50):
        for m in consumer.consume(10000, timeout=0.3):
            if m.error() is None:
                epoch = int(dict(m.headers())["goka-ray.epoch"])
                epochs.setdefault(m.partition(), []).append(epoch)
    consumer.close()
    for p, seq in epochs.items():
        assert seq == sorted(seq), f"partition {p}: writers interleaved: {seq}"
        assert len(set(seq)) == 3, f"partition {p}: expected three owners, saw {set(seq)}"


def test_processor_failure_surfaces_in_wait_with_message_coordinates(
    kafka, unique, tmp_path, ray_local
):
    topic = f"{unique}-in"

    def picky(ctx: Context, msg: str) -> None:
        if msg == "poison":
            raise ValueError("poison message")
        ctx.set_value(msg)

    graph = define_group(
        f"{unique}-picky", Input(topic, codecs.String(), picky), Persist(codecs.String())
    )
    brokers = kafka.bootstrap_servers
    with TopicManager(brokers) as topics:
        topics.ensure_stream(topic, 2)
    produce(brokers, topic, [("a", b"fine"), ("b", b"poison")])
    processor = Processor(brokers, graph, {"storage_dir": str(tmp_path), "namespace": NAMESPACE})
    processor.start()
    try:
        with pytest.raises(ProcessingError) as info:
            processor.wait(timeout=120)
        err = info.value
        partition = MURMUR2.partition(b"b", 2)
        offset = 1 if MURMUR2.partition(b"a", 2) == partition else 0
        assert (err.topic, err.partition, err.key, err.offset) == (topic, partition, "b", offset)
        assert isinstance(err.error, ValueError)
        assert processor.status().state == "failed"
    finally:
        processor.stop()


def test_errors_raised_in_actors_reach_library_users_as_the_goka_ray_error(
    kafka, unique, tmp_path, ray_local
):
    from goka_ray import ConfigError, TopicError

    topic = f"{unique}-clicks"
    graph = click_counter(f"{unique}-counter", topic)
    settings = {"num_cpus": 0.1, "actors": 1}
    config = {"storage_dir": str(tmp_path), "namespace": NAMESPACE}
    missing = Processor(
        kafka.bootstrap_servers, graph, {**config, "groups": {graph.group: settings}}
    )
    with pytest.raises(TopicError) as info:
        missing.start()  # the coordinator actor finds the input topic missing
    assert type(info.value) is TopicError  # not Ray's RayTaskError(TopicError)
    assert str(info.value).startswith(f"group {graph.group!r}: missing topic(s) [{topic!r}]")

    # create_topics: the missing input is created with the configured partition count
    settings = {**settings, "create_topics": True, "partitions": 2}
    p = Processor(kafka.bootstrap_servers, graph, {**config, "groups": {graph.group: settings}})
    p.start()
    try:
        p.wait_ready(120)
        with TopicManager(kafka.bootstrap_servers) as topics:
            assert topics.partitions(topic) == 2
        with pytest.raises(ConfigError) as info:
            p.scale(actors=0)  # validated by the coordinator
        assert type(info.value) is ConfigError
        assert "actors=0: use a whole number >= 1" in str(info.value)
        assert "ray::" not in str(info.value) and "\x1b[" not in str(info.value)
    finally:
        p.stop()


def test_a_strict_group_does_not_start_on_a_table_topic_whose_values_expire(
    kafka, unique, tmp_path, ray_local
):
    from confluent_kafka.admin import AdminClient, NewTopic

    from goka_ray import TopicError

    topic = f"{unique}-clicks"
    graph = click_counter(f"{unique}-counter", topic)
    brokers = kafka.bootstrap_servers
    with TopicManager(brokers) as topics:
        topics.ensure_stream(topic, 2)
    admin = AdminClient({"bootstrap.servers": brokers})
    table = NewTopic(graph.table_topic, 2, -1, config={"cleanup.policy": "delete"})
    admin.create_topics([table])[graph.table_topic].result(30)
    config = {
        "storage_dir": str(tmp_path),
        "namespace": NAMESPACE,
        "groups": {graph.group: {"topic_config_mismatch": "fail", "num_cpus": 0.1}},
    }
    processor = Processor(brokers, graph, config)
    with pytest.raises(TopicError) as info:
        processor.start()
    assert f"'{graph.table_topic}' has cleanup.policy=delete" in str(info.value)
    assert "--add-config cleanup.policy=compact" in str(info.value)
    wait_until(
        lambda: not [n for n in ray.util.list_named_actors() if graph.group in n],
        30,
        "the coordinator removed",
    )


def test_a_table_topic_that_expires_values_is_a_warning_in_the_groups_status(kafka, group_setup):  # type: ignore[no-untyped-def]
    """The check at start warns in the coordinator's log, and in `status` and the monitor,
    where a user of the CLI sees it."""
    graph, _topic, make, _view = group_setup
    with TopicManager(kafka.bootstrap_servers) as topics:
        topics.create(graph.table_topic, PARTITIONS, {"cleanup.policy": "delete"})
    processor = make(actors=1)
    processor.start()
    processor.wait_ready(120)
    warnings = processor.status().warnings
    assert any(
        graph.table_topic in w and "cleanup.policy=delete" in w and "compact" in w for w in warnings
    ), warnings


def test_a_recovered_partition_goes_without_waiting_for_the_watch_tick(kafka, group_setup):
    """A partition actor nudges the coordinator when a partition has recovered (the status
    round that sends ``go`` runs at once) and when it runs (the status shows it). With a watch
    tick of 10 minutes, every partition processes, and shows as running, only through the
    nudges (before them, a start waited for the next tick)."""
    from goka_ray.actors.classes import remote_class
    from goka_ray.actors.coordinator import GroupCoordinator, GroupSpec
    from goka_ray.control.names import coordinator_name

    graph, topic, make, make_view = group_setup
    brokers = kafka.bootstrap_servers
    truth, _ = produce_clicks(brokers, topic, 400, 40)
    spec = GroupSpec(brokers, graph, make().config, watch_interval=600.0)
    coordinator = (
        remote_class(GroupCoordinator)
        .options(
            name=coordinator_name(graph.group),
            namespace=NAMESPACE,
            lifetime="detached",
            max_concurrency=64,
        )
        .remote(spec)
    )
    processor = Processor.attach(graph.group, namespace=NAMESPACE)
    try:
        assert ray.get(coordinator.start.remote(), timeout=60) == PARTITIONS
        started = time.monotonic()
        view = make_view().start()
        wait_counts(view, truth, timeout=240)  # every partition processed its clicks
        counted_after = time.monotonic() - started
        assert counted_after < 300, "counted only after a watch tick: the nudges did not work"
        # the status shows them running: the rounds the running partitions asked for
        status = processor.wait_ready(60)
        assert [p.state for p in status.partitions] == ["running"] * PARTITIONS
        print(f"\nevery click counted {counted_after:.1f}s after start(), with a 600 s tick")
    finally:
        processor.stop()


def test_actor_processes_settle_the_garbage_collector(kafka, group_setup):
    """Partition actors, the coordinator and view actors freeze what their start-up made, so
    that collections no longer walk Ray's and goka-ray's ~110,000 objects (full collections
    were 0.2 s each); CPython's thresholds stay."""
    import gc

    from goka_ray.control.names import coordinator_name, view_actor_name

    graph, topic, make, make_view = group_setup
    truth, _ = produce_clicks(kafka.bootstrap_servers, topic, 400, 40)
    processor = make()
    processor.start()
    status = processor.wait_ready(120)
    view = make_view().start()
    wait_counts(view, truth)
    names = sorted({p.actor_name for p in status.partitions})
    names += [coordinator_name(graph.group), view_actor_name(graph.table_topic, 0, 1)]

    def collector(_actor: object) -> tuple[tuple[int, int, int], int]:
        return gc.get_threshold(), gc.get_freeze_count()

    for name in names:
        handle = ray.get_actor(name, namespace=NAMESPACE)
        thresholds, frozen = ray.get(handle.__ray_call__.remote(collector), timeout=30)
        assert frozen > 1000, name
        assert thresholds == gc.get_threshold(), name
    assert gc.get_freeze_count() == 0  # the driver's process is the user's: never frozen
