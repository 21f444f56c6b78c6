"""LocalKafka starts a broker on a free loopback port and stops only it."""

from __future__ import annotations

import pytest

from goka_ray.errors import BrokerError
from goka_ray.kafka.topics import TopicManager
from goka_ray.tools.local import LocalKafka


def test_local_broker_answers_on_loopback_and_stops():
    broker = LocalKafka().start()
    servers = broker.bootstrap_servers
    assert servers.startswith("127.0.0.1:") and not servers.endswith(":9092")
    with TopicManager(servers) as topics:
        topics.ensure_stream("hello", 2)
        assert topics.partitions("hello") == 2
    process = broker._process
    broker.stop()
    broker.stop()  # idempotent
    assert process is not None and process.poll() is not None
    with pytest.raises(BrokerError, match="not started"):
        _ = broker.bootstrap_servers


def test_two_local_brokers_get_different_ports(kafka):
    with LocalKafka() as other:
        assert other.bootstrap_servers != kafka.bootstrap_servers
