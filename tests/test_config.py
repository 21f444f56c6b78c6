from __future__ import annotations

import pytest

from goka_ray import Config, ConfigError, GroupConfig
from goka_ray.control.assignment import plan_actors


def test_defaults_need_no_configuration():
    config = Config.load(None)
    assert config.group("any") == GroupConfig()
    assert config.namespace == "goka-ray" and config.view("t").replicas == 1


def test_yaml_file_is_loaded_and_validated(tmp_path):
    path = tmp_path / "goka.yaml"
    path.write_text(
        "brokers: k:9092\n"
        "storage_dir: /data\n"
        "kafka: {consumer: {fetch.min.bytes: 1}}\n"
        "groups:\n  clicks: {actors: 2, placement: pack, num_cpus: 1}\n"
        "views:\n  clicks-table: {replicas: 3}\n"
    )
    config = Config.load(path)
    assert config.brokers == "k:9092" and config.storage_dir == "/data"
    assert config.group("clicks").actors == 2 and config.group("clicks").placement == "pack"
    assert config.view("clicks-table").replicas == 3
    assert config.consumer_config() == {"fetch.min.bytes": 1}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"brokerz": "x"}, r"unknown key brokerz \(did you mean brokers\?\); allowed keys"),
        (
            {"groups": {"g": {"actorz": 2}}},
            r"unknown key groups.g.actorz \(did you mean groups.g.actors\?",
        ),
        (
            {"views": {"t": {"replica": 2}}},
            r"unknown key views.t.replica \(did you mean views.t.replicas\?",
        ),
        ({"groups": {"g": {"placement": "random"}}}, r"groups.g.placement='random': choose one"),
        ({"groups": {"g": {"num_cpus": "lots"}}}, "groups.g.num_cpus='lots': expected float"),
        ({"groups": {"g": {"partitions_per_actor": 0}}}, "partitions_per_actor=0"),
        ({"kafka": ["consumer"]}, "kafka: expected a mapping with 'consumer' and/or 'producer'"),
        (
            {"kafka": {"consumr": {"fetch.min.bytes": 1}}},
            r"unknown key kafka.consumr \(did you mean kafka.consumer\?\); allowed keys: "
            r"\['consumer', 'producer'\]",
        ),
        ({"kafka": {"admin": {}}}, r"unknown key kafka.admin; allowed keys: \['consumer'"),
        ({"kafka": {"consumer": 5}}, "kafka.consumer: expected a mapping of librdkafka settings"),
        ({"kafka": {"producer": {"acks": [1]}}}, r"kafka.producer.acks=\[1\]: librdkafka takes"),
        (
            {"groups": {"g": {"actorz": 2, "num_cpu": 1}}},
            r"unknown keys groups.g.actorz \(did you mean groups.g.actors\?\), groups.g.num_cpu "
            r"\(did you mean groups.g.num_cpus\?\)",
        ),
        (
            {"groups": {"g": {"topic_config_mismatch": "ignore"}}},
            r"choose one of \['warn', 'fail'\]",
        ),
    ],
)
def test_bad_keys_and_values_name_the_key_path(data, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_dict(data)


def test_invalid_yaml_is_reported_with_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("groups: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml is not valid YAML"):
        Config.from_yaml(path)


def test_with_group_applies_validated_changes():
    config = Config().with_group("g", actors=4)
    assert config.group("g").actors == 4
    with pytest.raises(ConfigError, match=r"unknown setting groups\.g\.workers; allowed keys"):
        config.with_group("g", workers=2)
    with pytest.raises(ConfigError, match=r"groups.g.actor \(did you mean groups.g.actors\?\)"):
        config.with_group("g", actor=2)


def test_actor_plans_pack_and_spread_partitions():
    assert plan_actors(4) == [[0], [1], [2], [3]]
    assert plan_actors(4, actors=1) == [[0, 1, 2, 3]]
    assert plan_actors(4, actors=3) == [[0, 1], [2], [3]]
    assert plan_actors(5, partitions_per_actor=2) == [[0, 1], [2, 3], [4]]
    assert plan_actors(2, actors=8) == [[0], [1]]


def test_the_example_config_file_loads_and_shows_every_default() -> None:
    import dataclasses
    from pathlib import Path

    from goka_ray.core.config import Config, GroupConfig, ViewConfig

    path = Path(__file__).resolve().parent.parent / "goka.yaml"
    config = Config.from_yaml(path)
    assert config.brokers == "kafka-1:9092,kafka-2:9092"
    # the file lists every group and view setting with its default value
    assert dataclasses.asdict(config.group("clicks")) == dataclasses.asdict(GroupConfig())
    assert config.view("clicks-table") == ViewConfig()


@pytest.mark.parametrize(
    ("section", "settings", "message"),
    [
        ("consumer", {"fetch.min.bytez": 1}, 'No such configuration property: "fetch.min.bytez"'),
        ("producer", {"linger.ms": "soon"}, "Invalid value for configuration property"),
    ],
)
def test_librdkafka_settings_are_checked_before_anything_starts(section, settings, message):
    from goka_ray import Input, Processor, View, codecs, define_group

    config = {"kafka": {section: settings}}
    graph = define_group("g", Input("in", codecs.String(), lambda ctx, m: None))
    # no broker and no Ray are needed to find out: the check runs before either is contacted
    processor = Processor("127.0.0.1:9", graph, config)
    with pytest.raises(ConfigError, match=f"kafka.{section}: librdkafka refuses the settings"):
        processor.start()
    with pytest.raises(ConfigError, match=message):
        processor.start()
    if section == "consumer":
        with pytest.raises(ConfigError, match=message):
            View("127.0.0.1:9", "g-table", codecs.Int(), config).start()


def test_a_group_missing_from_a_config_of_other_groups_is_named_with_the_closest() -> None:
    config = Config.load({"groups": {"mycoutn": {"actors": 2}, "other": {}}})
    warning = config.unconfigured_group("mycount")
    assert warning is not None
    assert "did you mean groups.mycoutn?" in warning and "runs with the defaults" in warning
    assert config.unconfigured_group("mycoutn") is None  # configured
    assert Config.load({}).unconfigured_group("mycount") is None  # no groups: defaults meant


def test_no_brokers_says_how_to_give_them_in_python_and_on_the_command_line() -> None:
    with pytest.raises(ConfigError, match="--brokers HOST:PORT") as err:
        Config.load({}).resolve_brokers(None)
    assert "brokers='host:9092'" in str(err.value)
