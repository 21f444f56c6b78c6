"""Existing topics with settings that lose data are reported at start (real local broker).

The local broker reports only the settings set explicitly on a topic (see the broker notes),
so these tests also show that a setting the broker does not report is taken as the broker's
default (``delete`` for ``cleanup.policy``).
"""

from __future__ import annotations

import logging

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from goka_ray import Input, Loop, Persist, TopicError, codecs, define_group
from goka_ray.kafka.topics import TopicManager

S, INT = codecs.String(), codecs.Int()


def graph(group: str, topic: str, loop: bool = False):  # type: ignore[no-untyped-def]
    edges = [Input(topic, S, lambda ctx, m: None), Persist(INT)]
    if loop:
        edges.append(Loop(S, lambda ctx, m: None))
    return define_group(group, *edges)


def create(brokers: str, topic: str, partitions: int, config: dict[str, str]) -> None:
    admin = AdminClient({"bootstrap.servers": brokers})
    admin.create_topics([NewTopic(topic, partitions, -1, config=config)])[topic].result(30)


@pytest.fixture
def names(kafka, unique):  # type: ignore[no-untyped-def]
    with TopicManager(kafka.bootstrap_servers) as topics:
        topics.ensure_stream(f"{unique}-in", 2)
    return f"{unique}-g", f"{unique}-in"


def test_a_table_topic_with_delete_is_a_warning_naming_the_topic_setting_and_fix(
    kafka, names, caplog
) -> None:
    group, topic = names
    create(kafka.bootstrap_servers, f"{group}-table", 2, {"cleanup.policy": "delete"})
    with caplog.at_level(logging.WARNING), TopicManager(kafka.bootstrap_servers) as topics:
        assert topics.ensure_group_topics(graph(group, topic)) == 2
    [warning] = [r.getMessage() for r in caplog.records if "cleanup.policy" in r.getMessage()]
    assert f"table topic '{group}-table' has cleanup.policy=delete" in warning
    assert "table values expire after retention.ms" in warning
    assert (
        f"kafka-configs.sh --bootstrap-server {kafka.bootstrap_servers} --alter --entity-type "
        f"topics --entity-name {group}-table --add-config cleanup.policy=compact"
    ) in warning


def test_the_strict_setting_refuses_to_start_on_a_table_topic_with_delete(kafka, names) -> None:
    group, topic = names
    create(kafka.bootstrap_servers, f"{group}-table", 2, {"cleanup.policy": "delete"})
    with TopicManager(kafka.bootstrap_servers) as topics, pytest.raises(TopicError) as info:
        topics.ensure_group_topics(graph(group, topic), "fail")
    message = str(info.value)
    assert f"'{group}-table' has cleanup.policy=delete" in message
    assert "--add-config cleanup.policy=compact" in message
    assert "topic_config_mismatch: warn" in message


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({}, "does not set cleanup.policy (the broker default applies"),
        ({"cleanup.policy": "compact,delete", "retention.ms": "60000"}, "compact,delete"),
        ({"cleanup.policy": "compact,delete", "retention.ms": "-1"}, None),
        ({"cleanup.policy": "compact"}, None),
    ],
)
def test_a_table_topic_must_keep_its_values_forever(kafka, names, config, problem) -> None:
    group, topic = names
    create(kafka.bootstrap_servers, f"{group}-table", 2, config)
    with TopicManager(kafka.bootstrap_servers) as topics:
        found = topics.config_mismatches(graph(group, topic))
    if problem is None:
        assert found == []
    else:
        [mismatch] = found
        assert (mismatch.topic, mismatch.setting, mismatch.expected) == (
            f"{group}-table",
            "cleanup.policy",
            "compact",
        )
        assert problem in mismatch.describe(kafka.bootstrap_servers)


def test_a_compacted_loop_topic_is_reported(kafka, names) -> None:
    group, topic = names
    create(kafka.bootstrap_servers, f"{group}-loop", 2, {"cleanup.policy": "compact"})
    with TopicManager(kafka.bootstrap_servers) as topics, pytest.raises(TopicError) as info:
        topics.ensure_group_topics(graph(group, topic, loop=True), "fail")
    assert f"loop topic '{group}-loop' has cleanup.policy=compact" in str(info.value)
    assert "--add-config cleanup.policy=delete" in str(info.value)


def test_topics_goka_ray_creates_or_that_fit_pass_silently(kafka, names, caplog) -> None:
    group, topic = names
    g = graph(group, topic, loop=True)
    with caplog.at_level(logging.WARNING), TopicManager(kafka.bootstrap_servers) as topics:
        topics.ensure_group_topics(g, "fail")  # creates the table and the loop
        topics.ensure_group_topics(g, "fail")  # now they exist: checked, and they fit
        assert topics.config_mismatches(g) == []
    assert not [r for r in caplog.records if "cleanup.policy" in r.getMessage()]
