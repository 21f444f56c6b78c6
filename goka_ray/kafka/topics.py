"""TopicManager: create and check the topics a group needs (streams, its table, loop, DLQ).

Topics goka-ray creates get the settings their role needs: a table (changelog) topic is
compacted (``cleanup.policy=compact``), so the last value of every key stays forever; loop and
dead-letter topics are plain streams. A topic that already exists is checked too (Goka's
TopicManager ``MismatchBehavior``): a table topic whose records can expire (``delete``, or
``compact,delete`` with a finite ``retention.ms``) or a loop or dead-letter topic that is
compacted (compaction keeps only the last record per key, so unprocessed ones can vanish) is
reported naming the topic, the setting and the ``kafka-configs`` command that fixes it: a
warning by default, a TopicError with ``topic_config_mismatch: fail``. A setting a broker does
not report is taken as its broker default (Kafka's ``log.cleanup.policy`` is ``delete``); some
brokers report only what was set explicitly on the topic.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from confluent_kafka import KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from goka_ray.core.graph import GroupGraph
from goka_ray.errors import TopicError, did_you_mean
from goka_ray.kafka.clients import broker_unreachable, client_config

__all__ = [
    "GroupTopic",
    "TopicConfigMismatch",
    "TopicDescription",
    "TopicManager",
    "check_brokers",
    "copartitioning",
]

logger = logging.getLogger(__name__)

#: what to do when an existing topic's settings do not fit its role
MismatchBehavior = Literal["warn", "fail"]


@dataclass(frozen=True)
class TopicConfigMismatch:
    """An existing topic whose setting does not fit the role goka-ray gives it.

    ``found`` is None when the broker does not report the setting (its default applies).
    """

    topic: str
    role: str
    setting: str
    found: str | None
    expected: str
    why: str

    def fix(self, brokers: str) -> str:
        """The command that sets the expected value."""
        return (
            f"kafka-configs.sh --bootstrap-server {brokers} --alter --entity-type topics "
            f"--entity-name {self.topic} --add-config {self.setting}={self.expected}"
        )

    def describe(self, brokers: str) -> str:
        """One sentence: the topic, the setting, why it matters and how to fix it."""
        found = (
            f"has {self.setting}={self.found}"
            if self.found is not None
            else f"does not set {self.setting} (the broker default applies, 'delete' unless "
            f"log.cleanup.policy was changed)"
        )
        return f"{self.role} {self.topic!r} {found}: {self.why}. Fix it with: {self.fix(brokers)}"


#: roles of topics read as tables: their values must never expire
_TABLE_ROLES = ("table topic", "join topic", "lookup topic")


def _cleanup_mismatch(
    topic: str, role: str, settings: dict[str, str]
) -> TopicConfigMismatch | None:
    """The cleanup.policy mismatch of ``topic`` in ``role`` (a table, or a stream the group
    writes and reads: its loop, its dead letters)."""
    found = settings.get("cleanup.policy")
    policies = {p.strip() for p in (found or "delete").split(",")}
    if role in _TABLE_ROLES:
        expires = "delete" in policies and settings.get("retention.ms", "") != "-1"
        if "compact" in policies and not expires:
            return None
        why = (
            "table values expire after retention.ms and are then lost to every recovery and "
            "view; a table (changelog) topic must be compacted"
        )
        return TopicConfigMismatch(topic, role, "cleanup.policy", found, "compact", why)
    if "compact" not in policies:
        return None
    why = (
        "compaction keeps only the last record of each key, so records the group has not "
        "processed yet can be removed; a stream must not be compacted"
    )
    return TopicConfigMismatch(topic, role, "cleanup.policy", found, "delete", why)


class TopicManager:
    """Creates and checks the topics of streams, tables and groups."""

    def __init__(
        self, brokers: str, *, timeout: float = 10.0, replication_factor: int | None = None
    ) -> None:
        self.brokers = brokers
        self.timeout = timeout
        # -1 asks the broker for its default.replication.factor (CreateTopics v4+)
        self.replication_factor = -1 if replication_factor is None else replication_factor
        self._admin = AdminClient(
            client_config(brokers, {"socket.connection.setup.timeout.ms": int(timeout * 1000)})
        )

    def __enter__(self) -> TopicManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release explicitly; here for symmetry with the other clients."""

    def _metadata(self, topic: str | None = None) -> Any:
        try:
            return self._admin.list_topics(topic=topic, timeout=self.timeout)
        except KafkaException as exc:
            raise broker_unreachable(self.brokers, self.timeout, exc) from exc

    def topic_ids(self, topics: Iterable[str]) -> dict[str, str]:
        """The broker's topic id (a UUID, new whenever a topic is re-created) of each topic.

        Topics the broker reports no id for (older brokers, missing topics, describe not
        supported) are left out, so callers fall back to other checks.
        """
        names = sorted(set(topics))
        if not names:
            return {}
        try:
            futures = self._admin.describe_topics(
                TopicCollection(names), request_timeout=self.timeout
            )
        except (KafkaException, NotImplementedError, TypeError) as exc:
            logger.debug("describe_topics is not available at %s: %s", self.brokers, exc)
            return {}
        ids: dict[str, str] = {}
        for name, future in futures.items():
            try:
                description = future.result(timeout=self.timeout + 5)
            except Exception as exc:  # per topic: missing, not authorised, not supported
                logger.debug("no topic id for %s at %s: %s", name, self.brokers, exc)
                continue
            topic_id = getattr(description, "topic_id", None)
            text = str(topic_id) if topic_id is not None else ""
            if text and text.strip("A=") and text != "00000000-0000-0000-0000-000000000000":
                ids[name] = text  # an all-zero id means "no id"
        return ids

    def list_topics(self, *, internal: bool = False) -> dict[str, int]:
        """Every topic and its partition count, by name; the broker's internal topics
        (``__consumer_offsets``...) only with ``internal=True``."""
        topics = self._metadata().topics
        return {
            name: len(meta.partitions)
            for name, meta in sorted(topics.items())
            if meta.error is None and (internal or not name.startswith("__"))
        }

    def describe(self, topic: str) -> TopicDescription:
        """Partitions, replicas, leaders and the settings the broker reports for ``topic``.

        TopicError if it does not exist (naming a close match). Some brokers report only
        the settings that were set on the topic; a missing one means the broker's default.
        """
        meta = self._metadata().topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            known = self.list_topics(internal=True)
            raise TopicError(
                f"no topic {topic!r} at {self.brokers}.{did_you_mean(topic, known)} "
                "`goka-ray topics list` shows every topic."
            )
        parts = meta.partitions
        config, overrides = self._settings(topic)
        return TopicDescription(
            name=topic,
            partitions=len(parts),
            replication_factor=min(len(p.replicas) for p in parts.values()),
            leaders={p: parts[p].leader for p in sorted(parts)},
            in_sync={p: len(parts[p].isrs) for p in sorted(parts)},
            config=config,
            overrides=overrides,
        )

    def _settings(self, topic: str) -> tuple[dict[str, str], set[str]]:
        """DescribeConfigs of one topic: every setting reported, and the names of those the
        broker says were set on the topic (not its defaults); nothing if it cannot say."""
        try:
            entries = self._config_entries([topic])[topic]
        except TopicError as exc:
            logger.debug("cannot describe the settings of %s: %s", topic, exc)
            return {}, set()
        reported = {n: str(e.value) for n, e in sorted(entries.items()) if e.value is not None}
        return reported, {n for n, e in entries.items() if n in reported and not e.is_default}

    def _config_entries(self, topics: Iterable[str]) -> dict[str, dict[str, Any]]:
        """DescribeConfigs: each topic's ConfigEntry objects by setting name; TopicError if the
        broker cannot describe one (BrokerError if it cannot be reached)."""
        names = sorted(set(topics))
        if not names:
            return {}
        resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
        try:
            futures = self._admin.describe_configs(resources, request_timeout=self.timeout)
        except KafkaException as exc:
            raise broker_unreachable(self.brokers, self.timeout, exc) from exc
        entries: dict[str, dict[str, Any]] = {}
        for resource, future in futures.items():
            try:
                entries[resource.name] = dict(future.result(timeout=self.timeout + 5))
            except Exception as exc:
                raise TopicError(
                    f"cannot read the settings of topic {resource.name!r} at {self.brokers} "
                    f"(DescribeConfigs: {exc}); grant DescribeConfigs on it, or set "
                    f"topic_config_mismatch: warn to go on without the check"
                ) from exc
        return entries

    def create(self, topic: str, partitions: int, config: dict[str, str] | None = None) -> None:
        """Create ``topic``; TopicError if it exists already or the broker refuses."""
        existing = self.partitions(topic)
        if existing is not None:
            raise TopicError(f"topic {topic!r} exists already ({existing} partitions)")
        self._ensure(topic, partitions, dict(config or {}))

    def group_topics(self, graph: GroupGraph) -> list[GroupTopic]:
        """Every topic ``graph`` reads or writes, with its role and partition count (None:
        missing). Co-partitioned ones (inputs, loop, table, joins) come first."""
        roles: list[tuple[str, str, bool]] = [(i.topic, "input", True) for i in graph.inputs]
        if graph.loop is not None:
            roles.append((graph.loop_topic, "loop", True))
        if graph.persist is not None:
            roles.append((graph.table_topic, "table", True))
        roles += [(j.table, "join", True) for j in graph.joins]
        roles += [(lk.table, "lookup", False) for lk in graph.lookups]
        roles += [(o.topic, "output", False) for o in graph.outputs]
        if graph.uses_dead_letter():
            roles.append((graph.dead_letter_topic, "dead letters", False))
        counts = self.list_topics(internal=True)
        seen: set[str] = set()
        out = []
        for topic, role, copartitioned in roles:
            if topic not in seen:
                seen.add(topic)
                out.append(GroupTopic(topic, role, copartitioned, counts.get(topic)))
        return out

    def ensure_inputs(self, graph: GroupGraph, partitions: int | None = None) -> list[str]:
        """Create ``graph``'s missing input streams (``create_topics: true``); returns them.

        They get the partition count of the group's existing co-partitioned topics, else
        ``partitions``; TopicError when neither is known or the existing ones disagree.
        """
        topics = self.group_topics(graph)
        missing = [t.topic for t in topics if t.role == "input" and t.partitions is None]
        if not missing:
            return []
        counts = {t.partitions for t in topics if t.copartitioned and t.partitions is not None}
        if len(counts) > 1:
            self.check_copartitioned(graph)  # raises, naming every count
        count = counts.pop() if counts else partitions
        if count is None:
            raise TopicError(
                f"group {graph.group!r}: cannot create its input topic(s) {missing}: none of "
                f"its co-partitioned topics exists yet to take the partition count from; set "
                f"groups.{graph.group}.partitions (e.g. 8)"
            )
        for topic in missing:
            self.ensure_stream(topic, count)
            logger.info(
                "group %s: created input topic %s (%d partitions)", graph.group, topic, count
            )
        return missing

    def partitions(self, topic: str) -> int | None:
        """The partition count of ``topic``, or None if it does not exist."""
        meta = self._metadata().topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            return None
        return len(meta.partitions)

    def _ensure(self, topic: str, partitions: int, config: dict[str, str]) -> bool:
        """Create ``topic`` if missing; returns whether this call created it."""
        existing = self.partitions(topic)
        if existing is not None:
            if existing != partitions:
                raise TopicError(
                    f"topic {topic!r} has {existing} partitions, expected {partitions}; "
                    f"co-partitioned topics must have the same count (recreate it, or change "
                    f"the other topics)"
                )
            return False
        new = NewTopic(topic, partitions, self.replication_factor, config=config)
        futures = self._admin.create_topics(
            [new], operation_timeout=self.timeout, request_timeout=self.timeout
        )
        try:
            futures[topic].result(timeout=self.timeout + 5)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" in str(exc):
                self._ensure(topic, partitions, config)
                return False
            raise TopicError(f"cannot create topic {topic!r} at {self.brokers}: {exc}") from exc
        except Exception as exc:
            raise broker_unreachable(self.brokers, self.timeout, exc) from exc
        logger.info("created topic %s (%d partitions, %s)", topic, partitions, config or "stream")
        return True

    def ensure_stream(self, topic: str, partitions: int) -> bool:
        """Create the stream topic if missing; TopicError if it has another partition count.

        Returns whether it was created."""
        return self._ensure(topic, partitions, {})

    def ensure_table(self, topic: str, partitions: int) -> bool:
        """Create the table topic (compacted) if missing; TopicError on another count.

        Returns whether it was created."""
        return self._ensure(topic, partitions, {"cleanup.policy": "compact"})

    def topic_settings(self, topics: Iterable[str]) -> dict[str, dict[str, str]]:
        """The settings the broker reports for each topic (DescribeConfigs).

        Some brokers report only what was set explicitly on the topic, so a missing setting
        means "the broker default". TopicError if the broker cannot describe a topic.
        """
        return {
            topic: {name: str(e.value) for name, e in entries.items() if e.value is not None}
            for topic, entries in self._config_entries(topics).items()
        }

    def config_mismatches(self, graph: GroupGraph) -> list[TopicConfigMismatch]:
        """The settings of ``graph``'s table, joined and looked-up tables, loop and
        dead-letter topics that do not fit their role (only topics that exist are checked)."""
        roles: dict[str, str] = {}
        if graph.persist is not None:
            roles[graph.table_topic] = "table topic"
        roles.update({j.table: "join topic" for j in graph.joins})
        roles.update({lk.table: "lookup topic" for lk in graph.lookups})
        if graph.loop is not None:
            roles[graph.loop_topic] = "loop topic"
        if graph.uses_dead_letter():
            roles[graph.dead_letter_topic] = "dead-letter topic"
        present = [t for t in roles if self.partitions(t) is not None]
        found = self.topic_settings(present)
        mismatches = [_cleanup_mismatch(t, roles[t], found.get(t, {})) for t in present]
        return [m for m in mismatches if m is not None]

    def check_topic_configs(
        self, graph: GroupGraph, mismatch: MismatchBehavior = "warn", *, skip: Iterable[str] = ()
    ) -> list[TopicConfigMismatch]:
        """Report the mismatches of :meth:`config_mismatches` (but for the ``skip`` topics):
        a warning each under ``"warn"``, one TopicError naming them all under ``"fail"``.

        Under ``"warn"`` a broker that cannot describe the topics is a warning too.
        Returns the mismatches found.
        """
        if mismatch not in ("warn", "fail"):
            raise TopicError(f"topic_config_mismatch={mismatch!r}; choose 'warn' or 'fail'")
        skipped = set(skip)
        try:
            found = [m for m in self.config_mismatches(graph) if m.topic not in skipped]
        except TopicError as exc:
            if mismatch == "fail":
                raise
            logger.warning("group %s: cannot check its topics' settings: %s", graph.group, exc)
            return []
        if found and mismatch == "fail":
            raise TopicError(
                f"group {graph.group!r}: "
                + "; ".join(m.describe(self.brokers) for m in found)
                + " (or set topic_config_mismatch: warn to start anyway)"
            )
        for m in found:
            logger.warning("group %s: %s", graph.group, m.describe(self.brokers))
        return found

    def check_copartitioned(self, graph: GroupGraph) -> int:
        """All existing co-partitioned topics of ``graph`` must agree; returns their count."""
        md = self._metadata().topics
        counts: dict[str, int | None] = {}
        for topic in graph.copartitioned_topics():
            meta = md.get(topic)
            ok = meta is not None and meta.error is None and meta.partitions
            counts[topic] = len(meta.partitions) if ok else None
        found = {c for c in counts.values() if c is not None}
        if len(found) > 1:
            listing = ", ".join(
                f"{t}: {c if c is not None else 'missing'}" for t, c in counts.items()
            )
            raise TopicError(
                f"group {graph.group!r}: its inputs, loop, table and joined tables must all have "
                f"the same partition count (co-partitioning), but: {listing}"
            )
        if not found:
            raise TopicError(f"group {graph.group!r}: none of {list(counts)} exists")
        return found.pop()

    def ensure_group_topics(
        self,
        graph: GroupGraph,
        mismatch: MismatchBehavior = "warn",
        found: list[TopicConfigMismatch] | None = None,
        created: set[str] | None = None,
    ) -> int:
        """Check inputs, joins and lookups exist; create the group's table, loop and DLQ topics,
        and check the settings of those that existed already (:meth:`check_topic_configs`:
        warn, or ``mismatch="fail"`` raises TopicError); the mismatches warned about are
        appended to ``found`` when given (a coordinator shows them in the group's status), and
        the names of the topics created here to ``created``.

        Returns the group's partition count.
        """
        md = self._metadata().topics
        required = [i.topic for i in graph.inputs] + [j.table for j in graph.joins]
        required += [lk.table for lk in graph.lookups]
        missing = [t for t in required if t not in md or md[t].error is not None]
        if missing:
            raise TopicError(
                f"group {graph.group!r}: missing topic(s) {missing} at {self.brokers}; create "
                f"them first: `goka-ray topics create {' '.join(missing)} --partitions N "
                f"--brokers {self.brokers}`, goka_ray.TopicManager(brokers).ensure_stream(topic, "
                f"partitions), or set create_topics: true in the group's config (for inputs)"
            )
        partitions = self.check_copartitioned(graph)
        made = set()
        if graph.persist is not None and self.ensure_table(graph.table_topic, partitions):
            made.add(graph.table_topic)
        if graph.loop is not None and self.ensure_stream(graph.loop_topic, partitions):
            made.add(graph.loop_topic)
        if graph.uses_dead_letter() and self.ensure_stream(graph.dead_letter_topic, partitions):
            made.add(graph.dead_letter_topic)
        mismatches = self.check_topic_configs(graph, mismatch, skip=made)
        if found is not None:
            found.extend(mismatches)
        if created is not None:
            created.update(made)
        return partitions


def check_brokers(brokers: str, timeout: float = 10.0) -> None:
    """Raise BrokerError (within about ``timeout``) if no broker answers."""
    with TopicManager(brokers, timeout=timeout) as topics:
        topics.partitions("__goka_ray_probe__")


@dataclass(frozen=True)
class TopicDescription:
    """A topic as the broker describes it (``TopicManager.describe``)."""

    name: str
    partitions: int
    replication_factor: int
    #: partition -> id of the broker that leads it (-1: no leader)
    leaders: dict[int, int]
    #: partition -> number of in-sync replicas
    in_sync: dict[int, int]
    #: the settings as the broker reports them (some brokers report only those set on the
    #: topic; a missing one has the broker's default)
    config: dict[str, str]
    #: the names of the settings the broker says were set on the topic, not defaults
    overrides: set[str]

    @property
    def cleanup_policy(self) -> str:
        """``delete`` (Kafka's default), ``compact`` or ``compact,delete``."""
        return self.config.get("cleanup.policy", "delete")

    @property
    def compacted(self) -> bool:
        return "compact" in self.cleanup_policy


@dataclass(frozen=True)
class GroupTopic:
    """A topic a group reads or writes (``TopicManager.group_topics``)."""

    topic: str
    #: input | loop | table | join | lookup | output | dead letters
    role: str
    #: must have the group's partition count (inputs, loop, table, joins)
    copartitioned: bool
    #: None if the topic does not exist
    partitions: int | None


def copartitioning(group: str, topics: list[GroupTopic]) -> tuple[int | None, list[str]]:
    """The group's partition count (None if none of its co-partitioned topics exists) and
    what is wrong: required topics that are missing, co-partitioned ones that disagree.

    The group creates its own table, loop and dead-letter topics; inputs and joined tables
    must exist (or ``create_topics: true`` creates the inputs).
    """
    problems = []
    counts: dict[int, list[str]] = {}
    for t in topics:
        if t.partitions is not None and t.copartitioned:
            counts.setdefault(t.partitions, []).append(t.topic)
        if t.partitions is None and t.role in ("input", "join", "lookup"):
            problems.append(
                f"{t.role} topic {t.topic!r} does not exist"
                + (
                    " (create it, or set create_topics: true)"
                    if t.role == "input"
                    else " (start the group that owns it first)"
                )
            )
    if len(counts) > 1:
        listing = "; ".join(f"{n} partitions: {', '.join(ts)}" for n, ts in sorted(counts.items()))
        problems.append(
            f"group {group!r}: its inputs, loop, table and joined tables must all have the same "
            f"partition count (co-partitioning), but {listing}"
        )
    count = next(iter(counts)) if len(counts) == 1 else None
    return count, problems
