"""A processor and its lookup table ride out a broker outage (Goka #452): the broker stops
answering for a while, then comes back; the runner neither fails nor stops following the
lookup table."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
from kafka_helpers import Running, produce, read_topic, runners_for, wait_until

from goka_ray import Context, Input, Lookup, Persist, codecs, define_group, table
from goka_ray.kafka.runner import RunnerState
from goka_ray.kafka.topics import TopicManager
from goka_ray.tools.local import LocalKafka


@pytest.fixture
def broker() -> Iterator[LocalKafka]:
    with LocalKafka() as kafka:  # its own: this test stops it
        yield kafka


def price_order(ctx: Context, item: str) -> None:
    """An order of ``item`` at its current price, looked up in the prices table."""
    ctx.set_value((ctx.value() or 0) + (ctx.lookup(table("prices"), item) or 0))


def test_a_runner_with_a_lookup_rides_out_a_broker_outage(broker: LocalKafka, tmp_path) -> None:
    brokers = broker.bootstrap_servers
    graph = define_group(
        "spend",
        Input("orders", codecs.String(), price_order),
        Lookup(table("prices"), codecs.Int()),
        Persist(codecs.Int()),
    )
    with TopicManager(brokers) as topics:
        topics.ensure_stream("orders", 1)
        topics.ensure_table(table("prices"), 2)
        topics.ensure_group_topics(graph)
    ints = codecs.Int()
    produce(brokers, table("prices"), [("apple", ints.encode(3)), ("pear", ints.encode(5))])
    ends = produce(brokers, "orders", [("ann", b"apple"), ("bob", b"pear")])
    runners = runners_for(brokers, graph, [0], tmp_path)
    with Running(runners) as running:
        running.wait_for_offsets("orders", ends)
        assert broker._process is not None
        pid = broker._process.pid
        os.kill(pid, signal.SIGSTOP)  # the broker answers nothing
        try:
            time.sleep(8)
            assert runners[0].state == RunnerState.RUNNING, runners[0].error
        finally:
            os.kill(pid, signal.SIGCONT)
        # after the outage: a new price reaches the lookup copy, and orders use it
        produce(brokers, table("prices"), [("apple", ints.encode(10))])
        core = runners[0].core
        wait_until(lambda: core.read_lookup(table("prices"), "apple") == 10, 120, "new price")
        ends = produce(brokers, "orders", [("ann", b"apple")])
        running.wait_for_offsets("orders", ends, timeout=120)
        assert runners[0].state == RunnerState.RUNNING, runners[0].error
    spend = {
        k.decode(): ints.decode(v)
        for _, _, k, v in read_topic(brokers, graph.table_topic, 1)
        if k and v
    }
    assert spend == {"ann": 3 + 10, "bob": 5}
