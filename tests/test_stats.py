"""The one stats record of a partition: the core counts into it, statuses carry copies."""

from __future__ import annotations

import json

from goka_ray import Context, Input, Output, Persist, codecs, define_group
from goka_ray.control.status import GroupStatus, PartitionStatus
from goka_ray.core.messages import InputMessage
from goka_ray.core.partition import PartitionCore
from goka_ray.core.stats import COUNTERS, PartitionStats

INT = codecs.Int()


def count_and_echo(ctx: Context, msg: int) -> None:
    if msg < 0:
        raise ValueError("negative")
    ctx.set_value((ctx.value() or 0) + msg)
    ctx.emit("out", ctx.key, msg)


GRAPH = define_group(
    "s",
    Input("nums", INT, count_and_echo, on_error="skip"),
    Output("out", INT),
    Persist(INT),
)


def num(key: str, value: int, offset: int) -> InputMessage:
    return InputMessage("nums", 0, offset, key.encode(), INT.encode(value))


def test_the_core_counts_into_the_record_it_is_given() -> None:
    record = PartitionStats(recovered=7)
    core = PartitionCore(GRAPH, 0, stats=record)
    result = core.process([num("a", 1, 0), num("a", -1, 1), num("b", 2, 2)])
    assert core.stats is record
    assert (result.processed, result.skipped, result.callback_errors) == (2, 1, 1)
    assert (record.processed, record.skipped, record.callback_errors) == (2, 1, 1)
    assert (record.emitted, record.table_writes, record.recovered) == (2, 2, 7)


def test_a_discarded_batch_is_not_counted_twice_when_processed_again() -> None:
    core = PartitionCore(GRAPH, 0)
    batch = [num("a", 1, 0), num("a", -1, 1)]
    core.discard(core.process(batch))  # e.g. Kafka refused a record, or a transaction aborted
    again = core.process(batch)
    core.commit(again)
    assert (core.stats.processed, core.stats.skipped, core.stats.emitted) == (1, 1, 1)


def test_a_snapshot_is_a_copy_with_the_gauges() -> None:
    record = PartitionStats(processed=3, offsets={"nums": 3})
    snapshot = record.copy(lag={"nums": 2}, keys=5)
    record.processed += 1
    record.offsets["nums"] = 4
    assert (snapshot.processed, snapshot.offsets, snapshot.lag, snapshot.keys) == (
        3,
        {"nums": 3},
        {"nums": 2},
        5,
    )
    assert set(COUNTERS) >= {"processed", "recovered", "unproducible", "aborted_skipped"}
    assert not {"offsets", "lag", "keys"} & set(COUNTERS)


def test_a_partition_status_reads_and_serialises_its_stats_flat() -> None:
    stats = PartitionStats(processed=10, recovered=4, offsets={"nums": 10}, lag={"nums": 1}, keys=3)
    status = PartitionStatus(partition=2, state="running", epoch=1, stats=stats)
    assert (status.processed, status.recovered, status.keys, status.lag) == (10, 4, 3, {"nums": 1})
    group = GroupStatus("s", "running", [status])
    assert (group.keys, group.lag) == (3, 1)
    data = json.loads(json.dumps(group.as_dict()))
    [part] = data["partitions"]
    assert part["processed"] == 10 and part["keys"] == 3 and part["epoch"] == 1
    assert "stats" not in part and part["offsets"] == {"nums": 10}
