"""`goka-ray topics` and `goka-ray broker` as a user runs them: subprocesses against a real
broker (no Ray needed)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka_helpers import read_topic

from goka_ray.core.partitioner import MURMUR2
from goka_ray.kafka.topics import GroupTopic, TopicManager, copartitioning

APP = """
from goka_ray import Input, Join, Lookup, Persist, codecs, define_group

def count(ctx, msg):
    ctx.set_value((ctx.value() or 0) + 1)

graph = define_group(
    "{group}",
    Input("{inputs}", codecs.String(), count),
    Join("{joined}", codecs.Int()),
    Lookup("{looked_up}", codecs.Int()),
    Persist(codecs.Int()),
)
"""


def goka_ray(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "goka-ray"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_create_list_and_describe_topics(kafka, unique: str) -> None:
    brokers = ["--brokers", kafka.bootstrap_servers]
    stream, table = f"{unique}-events", f"{unique}-users"
    made = goka_ray("topics", "create", stream, "--partitions", "3", *brokers)
    assert made.returncode == 0, made.stderr
    assert f"created topic {stream} at {kafka.bootstrap_servers} (3 partitions)" in made.stdout
    made = goka_ray(
        "topics",
        "create",
        table,
        "--partitions",
        "3",
        "--compact",
        "--set",
        "retention.ms=-1",
        *brokers,
    )
    assert made.returncode == 0, made.stderr

    again = goka_ray("topics", "create", stream, "--partitions", "4", *brokers)
    assert again.returncode == 2
    assert f"TopicError: topic {stream!r} exists already" in again.stderr
    assert "with 3 partitions, not 4" in again.stderr
    same = goka_ray("topics", "create", stream, "--partitions", "3", "--if-not-exists", *brokers)
    assert same.returncode == 0 and "exists already (3 partitions)" in same.stdout

    listed = json.loads(goka_ray("topics", "list", "--json", *brokers).stdout)
    assert listed[stream] == 3 and listed[table] == 3
    assert not any(name.startswith("__") for name in listed)

    described = json.loads(goka_ray("topics", "describe", stream, table, "--json", *brokers).stdout)
    by_name = {d["name"]: d for d in described}
    assert by_name[stream]["partitions"] == 3 and by_name[stream]["cleanup_policy"] == "delete"
    assert by_name[table]["cleanup_policy"] == "compact"
    assert set(by_name[table]["leaders"]) == {"0", "1", "2"}
    text = goka_ray("topics", "describe", table, *brokers).stdout
    assert f"{table}: 3 partitions, replication factor 1, cleanup.policy compact" in text

    # emit: keys numbered by {i}, partitioned by murmur2 as every goka-ray emitter
    emitted = goka_ray("emit", stream, "user-{i}", "click", "--count", "20", *brokers)
    assert emitted.returncode == 0, emitted.stderr
    assert f"emitted 20 message(s) to {stream} (3 partitions)" in emitted.stdout
    records = read_topic(kafka.bootstrap_servers, stream, 3)
    assert sorted(k for _, _, k, _ in records) == sorted(f"user-{i}".encode() for i in range(20))
    assert all(MURMUR2.partition(k, 3) == p and v == b"click" for p, _, k, v in records)
    bad_value = goka_ray("emit", table, "alice", "{not json", "--codec", "json", *brokers)
    assert bad_value.returncode == 2 and "is not a json value" in bad_value.stderr

    typo = goka_ray("topics", "describe", stream[:-1] + "x", *brokers)
    assert typo.returncode == 2
    assert f"Did you mean {stream!r}?" in typo.stderr


def test_check_a_groups_topics_before_it_starts(kafka, unique: str, tmp_path: Path) -> None:
    names = {
        "group": f"{unique}-counter",
        "inputs": f"{unique}-clicks",
        "joined": f"{unique}-profiles",
        "looked_up": f"{unique}-settings",
    }
    (tmp_path / "topics_app.py").write_text(APP.format(**names))
    brokers = ["--brokers", kafka.bootstrap_servers]
    check = ["topics", "check", "topics_app:graph", *brokers]

    missing = goka_ray(*check, "--json", cwd=tmp_path)
    assert missing.returncode == 2
    problems = json.loads(missing.stdout)["problems"]
    assert any(f"input topic {names['inputs']!r} does not exist" in p for p in problems)
    assert any(f"join topic {names['joined']!r} does not exist" in p for p in problems)

    with TopicManager(kafka.bootstrap_servers) as topics:
        topics.ensure_stream(names["inputs"], 4)
        topics.ensure_table(names["joined"], 2)  # not co-partitioned with the input
        topics.ensure_stream(names["looked_up"], 1)  # a lookup may have any count
    bad = goka_ray(*check, "--json", cwd=tmp_path)
    assert bad.returncode == 2
    report = json.loads(bad.stdout)
    assert report["partitions"] is None
    assert report["problems"] == [
        f"group {names['group']!r}: its inputs, loop, table and joined tables must all have the "
        f"same partition count (co-partitioning), but 2 partitions: {names['joined']}; "
        f"4 partitions: {names['inputs']}",
        f"lookup topic {names['looked_up']!r} does not set cleanup.policy (the broker default "
        "applies, 'delete' unless log.cleanup.policy was changed): table values expire after "
        "retention.ms and are then lost to every recovery and view; a table (changelog) topic "
        "must be compacted. Fix it with: kafka-configs.sh --bootstrap-server "
        f"{kafka.bootstrap_servers} --alter --entity-type topics --entity-name "
        f"{names['looked_up']} --add-config cleanup.policy=compact",
    ]
    assert "problem:" in goka_ray(*check, cwd=tmp_path).stdout

    good = {**names, "joined": f"{unique}-profiles4", "looked_up": f"{unique}-settings4"}
    (tmp_path / "topics_app_ok.py").write_text(APP.format(**good))
    with TopicManager(kafka.bootstrap_servers) as topics:
        topics.ensure_table(good["joined"], 4)
        topics.ensure_table(good["looked_up"], 1)
    ok = goka_ray("topics", "check", "topics_app_ok:graph", *brokers, cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"ok: the co-partitioned topics of {good['group']} have 4 partitions" in ok.stdout
    report = json.loads(
        goka_ray("topics", "check", "topics_app_ok:graph", *brokers, "--json", cwd=tmp_path).stdout
    )
    assert report["problems"] == [] and report["partitions"] == 4
    own = [t for t in report["topics"] if t["role"] == "table"]
    assert own == [  # the group creates its own table at start
        {
            "topic": f"{good['group']}-table",
            "role": "table",
            "copartitioned": True,
            "partitions": None,
        }
    ]


def test_copartitioning_names_what_is_missing_and_what_disagrees() -> None:
    topics = [
        GroupTopic("clicks", "input", True, 4),
        GroupTopic("g-table", "table", True, None),
        GroupTopic("profiles", "join", True, 8),
        GroupTopic("settings", "lookup", False, 1),
        GroupTopic("orders", "input", True, None),
    ]
    count, problems = copartitioning("g", topics)
    assert count is None
    assert problems == [
        "input topic 'orders' does not exist (create it, or set create_topics: true)",
        "group 'g': its inputs, loop, table and joined tables must all have the same partition "
        "count (co-partitioning), but 4 partitions: clicks; 8 partitions: profiles",
    ]
    assert copartitioning("g", topics[:2]) == (4, [])


def test_topics_without_brokers_say_how_to_get_one() -> None:
    proc = goka_ray("topics", "list")
    assert proc.returncode == 2
    assert "no Kafka brokers: pass --brokers HOST:PORT" in proc.stderr
    assert "`goka-ray broker` starts a local one" in proc.stderr


def test_broker_runs_in_the_foreground_prints_its_address_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "goka-ray"), "broker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.search(r"local Kafka-protocol broker on (127\.0\.0\.1:\d+)", first)
        assert match, first + (proc.stderr.read() if proc.poll() is not None else "")
        address = match.group(1)
        assert f"use it with --brokers {address}" in proc.stdout.readline()
        with TopicManager(address) as topics:
            topics.ensure_stream("via-the-cli-broker", 2)
            assert topics.partitions("via-the-cli-broker") == 2
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0
        assert "broker stopped" in proc.stdout.read()
        # the broker process itself is gone too: nothing listens there any more
        time.sleep(0.5)
        with pytest.raises(Exception):  # noqa: B017 - BrokerError, whatever the cause
            from goka_ray.kafka.topics import check_brokers

            check_brokers(address, timeout=2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
