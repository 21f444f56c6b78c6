"""Damaged local copies are rebuilt from the changelog by the runner (issue 10).

Real broker, real LevelDB, real damage: each kind of damage LevelDB can suffer is done to a
partition's copy between runs or while the runner reads it; processing goes on, and every
value equals both the truth and the changelog.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest
from kafka_helpers import (
    Running,
    clicks_graph,
    count_click,
    latest_values,
    produce,
    read_topic,
    runners_for,
    table_contents,
    wait_until,
)
from leveldb_damage import AT_REST, corrupt_table_in_place, tables

from goka_ray import (
    Context,
    Input,
    Join,
    LevelDBStorage,
    LocalCopyDamaged,
    Persist,
    StorageError,
    Visitor,
    codecs,
    define_group,
)
from goka_ray.core.storage import partition_dir
from goka_ray.core.tables import TablePartition
from goka_ray.kafka.local_copy import DAMAGED_SUFFIX, IDENTITY_FILE, MAX_REBUILDS, LocalCopies
from goka_ray.kafka.runner import RunnerConfig, RunnerState
from goka_ray.kafka.topics import TopicManager

INT = codecs.Int()
USERS = 400


class Clicks:
    """Clicks sent to a topic: the true counts and the end offset of each partition."""

    def __init__(self, brokers: str, topic: str) -> None:
        self.brokers, self.topic = brokers, topic
        self.truth: Counter[str] = Counter()
        self.ends: dict[int, int] = {}

    def send(self, users: list[str], times: int = 1) -> None:
        ends = produce(self.brokers, self.topic, [(u, b"click") for u in users] * times)
        self.ends.update(ends)
        self.truth.update({u: times for u in users})


def decoded(values: dict[bytes, bytes]) -> dict[str, int]:
    return {k.decode(): INT.decode(v) for k, v in values.items()}


def run_until_consumed(clicks, graph, partitions, storage_dir, config=None):  # type: ignore[no-untyped-def]
    """Run one runner per partition until each has consumed every click sent."""
    runners = runners_for(clicks.brokers, graph, range(partitions), storage_dir, config)
    with Running(runners) as running:
        running.wait_for_offsets(clicks.topic, clicks.ends)
    for r in runners:
        assert r.state == RunnerState.STOPPED, r.error


def damage_warnings(caplog: pytest.LogCaptureFixture, path: Path) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
        and r.name == "goka_ray.kafka.local_copy"
        and f"the local copy in {path} is not usable" in r.getMessage()
    ]


@pytest.fixture
def group(kafka, unique):  # type: ignore[no-untyped-def]
    """A click counter whose input has one partition per kind of damage."""

    def make(partitions: int):  # type: ignore[no-untyped-def]
        topic = f"{unique}-clicks"
        graph = clicks_graph(f"{unique}-counter", topic)
        with TopicManager(kafka.bootstrap_servers) as topics:
            topics.ensure_stream(topic, partitions)
            topics.ensure_group_topics(graph)
        return graph, Clicks(kafka.bootstrap_servers, topic)

    return make


def test_every_kind_of_damage_at_rest_is_rebuilt_from_the_changelog(kafka, group, tmp_path, caplog):
    kinds = list(AT_REST)
    partitions = len(kinds)
    graph, clicks = group(partitions)
    brokers = kafka.bootstrap_servers
    everyone = [f"user-{u}" for u in range(USERS)]
    half = everyone[: USERS // 2]

    clicks.send(everyone, 3)
    run_until_consumed(clicks, graph, partitions, tmp_path)
    # the other half's values now live only in LevelDB's older table files
    clicks.send(half, 2)
    run_until_consumed(clicks, graph, partitions, tmp_path)

    copies = {
        kind: partition_dir(tmp_path, graph.group, graph.table_topic, p)
        for p, kind in enumerate(kinds)
    }
    for kind, path in copies.items():
        assert tables(path), f"{kind}: the copy has no table file to damage"
        AT_REST[kind](path)

    clicks.send(everyone)
    with caplog.at_level(logging.WARNING, logger="goka_ray.kafka.local_copy"):
        run_until_consumed(clicks, graph, partitions, tmp_path)
    truth = clicks.truth

    changelog = decoded(latest_values(read_topic(brokers, graph.table_topic, partitions)))
    assert changelog == truth  # no loss was written to the changelog
    assert table_contents(tmp_path, graph.group, graph.table_topic, partitions) == truth
    for kind, path in copies.items():
        warnings = damage_warnings(caplog, path)
        if kind == "log-truncated" and not warnings:
            continue  # lost only whole batches of the newest log: an older, whole copy
        assert len(warnings) == 1, (kind, warnings)
        assert Path(f"{path}{DAMAGED_SUFFIX}").is_dir(), kind
        assert (
            "moving it aside" in warnings[0] and "rebuilding it from the changelog" in warnings[0]
        )


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_a_table_corrupted_while_the_runner_reads_it_is_rebuilt_and_processing_goes_on(
    kafka, group, tmp_path, caplog, guarantee
):
    graph, clicks = group(1)
    brokers, topic = kafka.bootstrap_servers, clicks.topic
    config = RunnerConfig(processing_guarantee=guarantee)
    everyone = [f"user-{u}" for u in range(USERS)]
    clicks.send(everyone, 2)
    run_until_consumed(clicks, graph, 1, tmp_path, config)
    path = partition_dir(tmp_path, graph.group, graph.table_topic, 0)

    runner = runners_for(brokers, graph, [0], tmp_path, config)[0]
    with (
        caplog.at_level(logging.WARNING, logger="goka_ray.kafka.local_copy"),
        Running([runner]) as running,
    ):
        # the reopened copy holds every count in a table file, none of it read yet
        running.wait_for_offsets(topic, clicks.ends)
        assert tables(path)
        corrupt_table_in_place(path)
        clicks.send(everyone)
        running.wait_for_offsets(topic, clicks.ends)
        status = runner.status()
    assert runner.state == RunnerState.STOPPED, runner.error
    truth = clicks.truth
    assert status.processed == USERS  # the abandoned batch counted once, when processed again
    assert status.recovered >= USERS  # the rebuild read the whole changelog
    (warning,) = damage_warnings(caplog, path)
    assert "Corruption" in warning
    assert Path(f"{path}{DAMAGED_SUFFIX}").is_dir()
    changelog = decoded(latest_values(read_topic(brokers, graph.table_topic, 1)))
    assert changelog == truth
    assert table_contents(tmp_path, graph.group, graph.table_topic, 1) == truth


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_a_failed_write_of_a_published_batch_keeps_the_batch_and_counts_exactly(
    kafka, group, tmp_path, caplog, guarantee
):
    # LevelDB refuses the write of a batch Kafka already acknowledged (an I/O error: injected
    # here, no disk fails on demand); the changelog holds the batch, so the rebuilt copy has it
    # and the input offsets are committed: nothing is processed twice, even at-least-once
    graph, clicks = group(1)
    brokers, topic = kafka.bootstrap_servers, clicks.topic
    config = RunnerConfig(processing_guarantee=guarantee)
    everyone = [f"user-{u}" for u in range(USERS)]
    clicks.send(everyone, 2)
    runner = runners_for(brokers, graph, [0], tmp_path, config)[0]
    storage = runner.core.table.storage  # type: ignore[union-attr]
    assert isinstance(storage, LevelDBStorage)
    failures: list[str] = []

    def failing_write(batch):  # type: ignore[no-untyped-def]
        del storage.write  # once
        failures.append("write")
        raise LocalCopyDamaged(str(storage.path), "writing a batch: IO error: injected")

    with Running([runner]) as running:
        running.wait_for_offsets(topic, clicks.ends)
        storage.write = failing_write  # type: ignore[method-assign]
        clicks.send(everyone)
        running.wait_for_offsets(topic, clicks.ends)
    truth = clicks.truth
    assert failures == ["write"]
    assert runner.state == RunnerState.STOPPED, runner.error
    changelog = decoded(latest_values(read_topic(brokers, graph.table_topic, 1)))
    assert changelog == truth
    assert table_contents(tmp_path, graph.group, graph.table_topic, 1) == truth


def test_a_joined_table_corrupted_while_the_runner_reads_it_is_rebuilt(
    kafka, unique, tmp_path, caplog
):
    # the copy of a joined table is read by ctx.join(): the batch is abandoned, the joined
    # copy rebuilt from its topic, the processing consumer moved to the rebuilt copy's offset
    brokers = kafka.bootstrap_servers
    topic, weights = f"{unique}-clicks", f"{unique}-weights"

    def weighted(ctx: Context, _: str) -> None:
        ctx.set_value((ctx.value() or 0) + (ctx.join(weights) or 1))

    graph = define_group(
        f"{unique}-counter",
        Input(topic, codecs.String(), weighted),
        Join(weights, INT),
        Persist(INT),
    )
    with TopicManager(brokers) as topics:
        topics.ensure_stream(topic, 1)
        topics.ensure_table(weights, 1)
        topics.ensure_group_topics(graph)
    everyone = [f"user-{u}" for u in range(USERS)]
    produce(brokers, weights, [(u, INT.encode(u.count("1") + 2)) for u in everyone])
    clicks = Clicks(brokers, topic)
    clicks.send(everyone)
    run_until_consumed(clicks, graph, 1, tmp_path)
    path = partition_dir(tmp_path, graph.group, weights, 0)

    runner = runners_for(brokers, graph, [0], tmp_path)[0]
    with (
        caplog.at_level(logging.WARNING, logger="goka_ray.kafka.local_copy"),
        Running([runner]) as running,
    ):
        running.wait_for_offsets(topic, clicks.ends)
        assert tables(path)
        corrupt_table_in_place(path)
        clicks.send(everyone)
        running.wait_for_offsets(topic, clicks.ends)
        # the join topic goes on being followed from the rebuilt copy's offset
        produce(brokers, weights, [("user-0", INT.encode(100))])
        joined = runner.core.joins[weights]
        wait_until(lambda: joined.get("user-0") == 100, 30, "the new weight")
        clicks.send(["user-0"])
        running.wait_for_offsets(topic, clicks.ends)
    assert runner.state == RunnerState.STOPPED, runner.error
    (warning,) = damage_warnings(caplog, path)
    assert "Corruption" in warning
    expected = {u: 2 * (u.count("1") + 2) for u in everyone}
    expected["user-0"] += 100
    assert table_contents(tmp_path, graph.group, graph.table_topic, 1) == expected


def test_a_visit_that_meets_a_damaged_copy_fails_and_the_partition_goes_on(kafka, unique, tmp_path):
    brokers = kafka.bootstrap_servers
    topic = f"{unique}-clicks"

    def double(ctx: Context, meta: object) -> None:
        ctx.set_value(2 * (ctx.value() or 0))

    graph = define_group(
        f"{unique}-counter",
        Input(topic, codecs.String(), count_click),
        Persist(INT),
        Visitor("double", double),
    )
    with TopicManager(brokers) as topics:
        topics.ensure_stream(topic, 1)
        topics.ensure_group_topics(graph)
    everyone = [f"user-{u}" for u in range(USERS)]
    clicks = Clicks(brokers, topic)
    clicks.send(everyone, 2)
    run_until_consumed(clicks, graph, 1, tmp_path)
    path = partition_dir(tmp_path, graph.group, graph.table_topic, 0)

    runner = runners_for(brokers, graph, [0], tmp_path)[0]
    with Running([runner]) as running:
        running.wait_for_offsets(topic, clicks.ends)
        corrupt_table_in_place(path)
        with pytest.raises(LocalCopyDamaged):
            runner.visit("double", timeout=60)
        assert runner.visit("double", timeout=60) == USERS  # on the rebuilt copy
        clicks.send(everyone)
        running.wait_for_offsets(topic, clicks.ends)
    assert runner.state == RunnerState.STOPPED, runner.error
    assert table_contents(tmp_path, graph.group, graph.table_topic, 1) == {
        u: 2 * 2 + 1 for u in everyone
    }


# -- the rules without a broker ------------------------------------------------------------


def test_a_copy_that_keeps_breaking_fails_the_partition_instead_of_looping(tmp_path: Path):
    copies = LocalCopies("g", 0)
    path = tmp_path / "copy"
    for _ in range(MAX_REBUILDS):
        path.mkdir()
        (path / "garbage").write_text("not LevelDB")
        copies.open(path).close()
        path.rename(tmp_path / f"seen-{len(list(tmp_path.iterdir()))}")
    path.mkdir()
    (path / "garbage").write_text("not LevelDB")
    with pytest.raises(StorageError, match="disk under the storage directory is failing"):
        copies.open(path)


def test_a_copy_of_another_partition_is_discarded(tmp_path: Path, caplog):
    copies = LocalCopies("g", 1)
    storage = copies.open(tmp_path / "copy")
    storage.set(b"k", b"v")
    (tmp_path / "copy" / IDENTITY_FILE).write_text('{"topic": "g-table", "partition": 0}')
    table = TablePartition("g-table", 1, storage, INT)
    with caplog.at_level(logging.WARNING, logger="goka_ray.kafka.local_copy"):
        copies.check_against_changelog({("g-table", 1): table}, {"g-table": "id-1"}, {})
    assert (storage.key_count(), list(storage.iterate())) == (0, [])
    assert "it was built from g-table[0], not g-table[1]" in caplog.text
    assert '"partition": 1' in (tmp_path / "copy" / IDENTITY_FILE).read_text()
    copies.close()
