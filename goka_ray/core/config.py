"""Typed configuration, from a dict or a YAML file; bad keys and values are rejected with
their path and what is allowed.

    brokers: "kafka-1:9092,kafka-2:9092"   # bootstrap.servers
    storage_dir: /var/lib/goka-ray          # LevelDB copies, in <storage_dir>/<Ray node id>
    namespace: goka-ray                     # Ray namespace of the named actors
    kafka: {consumer: {}, producer: {}}     # extra librdkafka settings for every client
    groups:
      clicks:                               # per processor group (defaults shown)
        partitions_per_actor: 1
        actors: null                        # or a fixed number of actors (wins)
        num_cpus: 0.25
        memory: null                        # bytes reserved per actor
        placement: spread                   # spread | pack
        max_restarts: 10                    # replacements of crashed actors, then fail
        batch_size: 20000
        initial_offset: earliest            # earliest | latest, for a new group
        create_topics: false                # create missing input topics at start
        partitions: null                    # partition count of topics the group creates
        standby_replicas: 0                 # passive, changelog-following copies per partition
        recover_ahead: false                # recover all tables before any partition processes
        processing_guarantee: at_least_once # at_least_once | exactly_once (Kafka transactions)
        partitioner: murmur2                # murmur2 (Kafka's Java client) | goka (Goka's FNV-1a)
        max_message_bytes: 1000000          # largest record produced (bytes); larger: on_error
        fetch_wait_max_ms: 500              # longest a fetch waits for data (latency vs load)
        fetch_min_bytes: 1                  # data a fetch waits for (1: answer at once)
        topic_config_mismatch: warn         # warn | fail: an existing table/loop topic's settings
        coordinator_node: head              # head | any | a Ray node id (hex)
        autoscaling: null                   # or {min_actors, max_actors, target_lag_per_partition,
                                            #     upscale_delay_s, downscale_delay_s}
        on_insufficient_resources: fail     # fail | wait, when the actors do not fit the cluster
    views:
      clicks-table:
        replicas: 1                         # actors, each serving a range of partitions
        num_cpus: 0.1
        on_insufficient_resources: fail     # fail | wait, when the actors do not fit
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from goka_ray.errors import ConfigError

__all__ = ["AutoscalingConfig", "Config", "GroupConfig", "ViewConfig"]

T = TypeVar("T")


@dataclass(frozen=True)
class AutoscalingConfig:
    """Lag-driven autoscaling of a group's actor count (``groups.<group>.autoscaling``).

    The coordinator keeps between ``min_actors`` and ``max_actors`` partition actors: it adds
    actors when the input lag per partition stays above ``target_lag_per_partition``
    (messages) for ``upscale_delay_s`` seconds, and removes actors when the lag stays below
    half the target for ``downscale_delay_s`` seconds and fewer actors can carry the input
    rate. Changes go through the live hand-over (no partition stops processing). The delays'
    defaults are Ray Serve's autoscaling defaults.
    """

    min_actors: int = 1
    #: None: one actor per partition at most
    max_actors: int | None = None
    target_lag_per_partition: int = 1000
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0

    def __post_init__(self) -> None:
        _positive(self.min_actors, "min_actors")
        if self.max_actors is not None:
            _positive(self.max_actors, "max_actors")
            if self.max_actors < self.min_actors:
                raise ConfigError(
                    f"max_actors={self.max_actors} is below min_actors={self.min_actors}: "
                    "use max_actors >= min_actors"
                )
        _positive(self.target_lag_per_partition, "target_lag_per_partition")
        for name in ("upscale_delay_s", "downscale_delay_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)}: use a number of seconds >= 0")


@dataclass(frozen=True)
class GroupConfig:
    """How a processor group runs on Ray."""

    partitions_per_actor: int = 1
    actors: int | None = None
    num_cpus: float = 0.25
    memory: int | None = None
    placement: Literal["spread", "pack"] = "spread"
    max_restarts: int = 10
    #: most input messages per batch (one changelog flush, one LevelDB write, one commit): a
    #: batch is what has arrived, up to this many, so it bounds the work under a backlog, never
    #: the wait; larger batches coalesce more writes of a key into one changelog record
    batch_size: int = 20000
    initial_offset: Literal["earliest", "latest"] = "earliest"
    #: create missing input topics (streams) at start, with the partition count of the
    #: group's existing topics, else ``partitions``; off by default, so that a misspelled
    #: topic name fails the start instead of creating an empty topic
    create_topics: bool = False
    #: partition count of the topics the group creates when none of its topics exists yet
    partitions: int | None = None
    #: passive copies per partition, on other nodes where the cluster has them; a standby
    #: follows the changelog and takes over a dead owner's partition after only the tail
    standby_replicas: int = 0
    #: recover every partition's table before any partition starts processing
    recover_ahead: bool = False
    #: ``at_least_once`` (Goka's guarantee) or ``exactly_once``: each batch's changelog
    #: writes, emits and input offsets in one Kafka transaction (needs a broker with
    #: transactions; consumers read ``read_committed``)
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    #: key -> partition: ``murmur2`` (Kafka's Java client) or ``goka`` (Goka's FNV-1a hasher,
    #: to share topics with Go processors built on Goka's defaults)
    partitioner: Literal["murmur2", "goka"] = "murmur2"
    #: the largest record the group may produce, in bytes (key, value, headers and the
    #: record overhead; the producer's ``message.max.bytes``): a message whose callback makes
    #: a larger changelog record, emit, loopback or dead letter goes through its input's
    #: ``on_error`` policy. Raise it together with the topics' ``max.message.bytes``
    max_message_bytes: int = 1_000_000
    #: latency against broker load: how long the broker may hold a fetch that has less than
    #: ``fetch_min_bytes`` to return (librdkafka's ``fetch.wait.max.ms``, milliseconds). A
    #: batch is whatever has arrived (up to ``batch_size``), so on Kafka a message waits at
    #: most this long only while its partition was idle; lower it on brokers that do not
    #: answer a waiting fetch when data arrives
    fetch_wait_max_ms: int = 500
    #: how much data a fetch waits for (librdkafka's ``fetch.min.bytes``, bytes): 1 answers
    #: as soon as anything arrived; more means fewer, larger fetches and more latency
    fetch_min_bytes: int = 1
    #: an existing table, loop or dead-letter topic whose settings do not fit its role (e.g. a
    #: table topic with ``cleanup.policy=delete``): ``warn`` (log it, with the fix) or ``fail``
    #: (the group does not start)
    topic_config_mismatch: Literal["warn", "fail"] = "warn"
    #: where the group's coordinator runs: ``head`` (the head node, which the cluster does not
    #: outlive, as Ray Serve places its controller), ``any`` (where Ray likes), or a node id
    #: (hex; soft: another node if that one is gone)
    coordinator_node: str = "head"
    #: lag-driven autoscaling of the actor count (None: the count is fixed by the config)
    autoscaling: AutoscalingConfig | None = None
    #: a start, scale or upgrade whose actors do not fit the cluster's free resources:
    #: ``fail`` at once, saying what is missing, or ``wait`` for them (the actors show as
    #: ``pending``; for clusters that add nodes on demand)
    on_insufficient_resources: Literal["fail", "wait"] = "fail"

    def __post_init__(self) -> None:
        _positive(self.partitions_per_actor, "partitions_per_actor")
        if self.actors is not None:
            _positive(self.actors, "actors")
        if self.num_cpus < 0:
            raise ConfigError(f"num_cpus={self.num_cpus}: use a number >= 0")
        _positive(self.batch_size, "batch_size")
        if self.partitions is not None:
            _positive(self.partitions, "partitions")
        _positive(self.max_message_bytes, "max_message_bytes")
        _positive(self.fetch_wait_max_ms, "fetch_wait_max_ms")
        _positive(self.fetch_min_bytes, "fetch_min_bytes")
        if not isinstance(self.standby_replicas, int) or self.standby_replicas < 0:
            raise ConfigError(
                f"standby_replicas={self.standby_replicas!r}: use a whole number >= 0"
            )
        if self.max_restarts < 0:
            raise ConfigError(f"max_restarts={self.max_restarts}: use a whole number >= 0")
        for name in (
            "initial_offset",
            "processing_guarantee",
            "partitioner",
            "placement",
            "topic_config_mismatch",
            "on_insufficient_resources",
        ):
            _one_of(self, name)
        if isinstance(self.autoscaling, Mapping):
            scaling = _build(AutoscalingConfig, self.autoscaling, "autoscaling")
            object.__setattr__(self, "autoscaling", scaling)


@dataclass(frozen=True)
class ViewConfig:
    """How a view of a table runs on Ray."""

    replicas: int = 1
    num_cpus: float = 0.1
    #: view actors that do not fit the cluster's free resources: ``fail`` the start at once,
    #: or ``wait`` for them
    on_insufficient_resources: Literal["fail", "wait"] = "fail"

    def __post_init__(self) -> None:
        _positive(self.replicas, "replicas")
        if self.num_cpus < 0:
            raise ConfigError(f"num_cpus={self.num_cpus}: use a number >= 0")
        _one_of(self, "on_insufficient_resources")


def _default_storage_dir() -> str:
    return os.path.join(tempfile.gettempdir(), "goka-ray")


@dataclass(frozen=True)
class Config:
    """Everything goka-ray needs to run groups and views; every key has a sensible default."""

    brokers: str | None = None
    storage_dir: str = field(default_factory=_default_storage_dir)
    namespace: str = "goka-ray"
    kafka: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, GroupConfig] = field(default_factory=dict)
    views: dict[str, ViewConfig] = field(default_factory=dict)

    def group(self, name: str) -> GroupConfig:
        return self.groups.get(name, GroupConfig())

    def unconfigured_group(self, name: str) -> str | None:
        """A warning when ``groups:`` configures other groups but not ``name`` (it runs with
        the defaults), naming the closest configured one: most often a misspelling."""
        if name in self.groups or not self.groups:
            return None
        close = difflib.get_close_matches(name, list(self.groups), n=1, cutoff=0.6)
        hint = f"did you mean groups.{close[0]}? " if close else ""
        return (
            f"group {name!r} has no settings under groups: (it configures "
            f"{', '.join(sorted(self.groups))}); {hint}it runs with the defaults"
        )

    def view(self, table: str) -> ViewConfig:
        return self.views.get(table, ViewConfig())

    def resolve_brokers(self, brokers: str | None) -> str:
        """``brokers`` if given, else the config's; ConfigError if neither is set."""
        resolved = brokers or self.brokers
        if not resolved:
            raise ConfigError(
                "no Kafka brokers: give them (brokers='host:9092' in Python, --brokers "
                "HOST:PORT on the command line) or set 'brokers' in the config"
            )
        return resolved

    def consumer_config(self) -> dict[str, Any]:
        return dict(self.kafka.get("consumer", {}))

    def producer_config(self) -> dict[str, Any]:
        return dict(self.kafka.get("producer", {}))

    def with_group(self, name: str, **changes: Any) -> Config:
        """A copy with ``changes`` applied to group ``name`` (validated)."""
        current = dataclasses.asdict(self.group(name))
        _reject_unknown(changes, current, f"groups.{name}.", "setting")
        merged = _build(GroupConfig, {**current, **changes}, f"groups.{name}")
        return dataclasses.replace(self, groups={**self.groups, name: merged})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Config:
        """Build and validate a config; raises ConfigError naming the bad key path."""
        data = dict(data or {})
        for section, kind in (("groups", GroupConfig), ("views", ViewConfig)):
            raw = data.get(section) or {}
            if not isinstance(raw, Mapping):
                raise ConfigError(f"{section}: expected a mapping of name -> settings")
            data[section] = {
                str(name): _build(kind, settings or {}, f"{section}.{name}")
                for name, settings in raw.items()
            }
        data["kafka"] = _client_settings(data.get("kafka"))
        return _build(cls, data, "")

    @classmethod
    def from_yaml(cls, path: str | Path) -> Config:
        """Load a YAML config file."""
        import yaml

        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
        if data is not None and not isinstance(data, Mapping):
            raise ConfigError(f"{path}: the top level must be a mapping of settings")
        return cls.from_dict(data)

    @classmethod
    def load(cls, config: Config | Mapping[str, Any] | str | Path | None) -> Config:
        """Accept a Config, a dict, a YAML path or None (defaults)."""
        if isinstance(config, Config):
            return config
        if isinstance(config, str | Path):
            return cls.from_yaml(config)
        return cls.from_dict(config)


def _one_of(config: object, name: str) -> None:
    """Reject a value outside a Literal field's choices (also when built without _build)."""
    allowed = get_args(get_type_hints(type(config))[name])
    value = getattr(config, name)
    if value not in allowed:
        raise ConfigError(f"{name}={value!r}: choose one of {list(allowed)}")


def _positive(value: int, name: str) -> None:
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}={value!r}: use a whole number >= 1")


def _reject_unknown(
    data: Mapping[Any, Any], allowed: Iterable[str], prefix: str, what: str = "key"
) -> None:
    """ConfigError naming every key of ``data`` not in ``allowed``, each with a "did you
    mean" where one is close, and the allowed keys."""
    choices = sorted(allowed)
    unknown = sorted((k for k in data if k not in choices), key=str)
    if not unknown:
        return
    named = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), choices, n=1, cutoff=0.6)
        hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
        named.append(f"{prefix}{key}{hint}")
    plural = "s" if len(unknown) > 1 else ""
    raise ConfigError(f"unknown {what}{plural} {', '.join(named)}; allowed keys: {choices}")


#: sections of ``kafka:``: librdkafka settings for each kind of client
_CLIENTS = ("consumer", "producer")


def _client_settings(kafka: Any) -> dict[str, dict[str, Any]]:
    """Validate ``kafka: {consumer: {...}, producer: {...}}``: known sections only, each a
    mapping of librdkafka setting names (str) to str, int, float or bool values."""
    if kafka is None:
        return {}
    if not isinstance(kafka, Mapping):
        raise ConfigError(
            f"kafka: expected a mapping with 'consumer' and/or 'producer' librdkafka settings, "
            f"got {kafka!r}"
        )
    _reject_unknown(kafka, _CLIENTS, "kafka.")
    out: dict[str, dict[str, Any]] = {}
    for client, settings in kafka.items():
        settings = settings or {}
        if not isinstance(settings, Mapping):
            raise ConfigError(
                f"kafka.{client}: expected a mapping of librdkafka settings (e.g. "
                f"{{fetch.min.bytes: 1}}), got {settings!r}"
            )
        for name, value in settings.items():
            if not isinstance(name, str):
                raise ConfigError(f"kafka.{client}: setting name {name!r} must be a string")
            if not isinstance(value, str | int | float | bool):
                raise ConfigError(
                    f"kafka.{client}.{name}={value!r}: librdkafka takes a string, number or boolean"
                )
        out[client] = dict(settings)
    return out


def _build(kind: type[T], data: Mapping[str, Any], path: str) -> T:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {data!r}")
    hints = get_type_hints(kind)
    fields = {f.name for f in dataclasses.fields(kind)}  # type: ignore[arg-type]
    prefix = f"{path}." if path else ""
    _reject_unknown(data, fields, prefix)
    data = dict(data)
    for name, value in data.items():
        nested = _dataclass_of(hints[name])
        if nested is not None and isinstance(value, Mapping):
            data[name] = value = _build(nested, value, f"{prefix}{name}")
        _check_type(value, hints[name], f"{prefix}{name}")
    try:
        return kind(**data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None


def _dataclass_of(hint: Any) -> type | None:
    """The dataclass a field holds (also inside ``X | None``), else None."""
    options = get_args(hint) if type(None) in get_args(hint) else (hint,)
    for option in options:
        if isinstance(option, type) and dataclasses.is_dataclass(option):
            return option
    return None


def _check_type(value: Any, hint: Any, path: str) -> None:
    origin = get_origin(hint)
    if origin is Literal:
        if value not in get_args(hint):
            raise ConfigError(f"{path}={value!r}: choose one of {list(get_args(hint))}")
        return
    options = get_args(hint) if origin is not None and type(None) in get_args(hint) else (hint,)
    if value is None:
        if type(None) not in options:
            raise ConfigError(f"{path}: a value is required")
        return
    for option in options:
        base = get_origin(option) or option
        if base is float and isinstance(value, int | float) and not isinstance(value, bool):
            return
        if base is bool and isinstance(value, bool):
            return
        if base is int and isinstance(value, int) and not isinstance(value, bool):
            return
        if base in (str, dict) and isinstance(value, base):
            return
        if isinstance(base, type) and dataclasses.is_dataclass(base) and isinstance(value, base):
            return
    names = " or ".join(
        "a mapping of settings" if _dataclass_of(o) else getattr(o, "__name__", str(o))
        for o in options
        if o is not type(None)
    )
    raise ConfigError(f"{path}={value!r}: expected {names}")
