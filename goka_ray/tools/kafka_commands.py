"""The ``goka-ray`` commands on the Kafka side: ``topics`` and the local dev ``broker``.

They need brokers (``--brokers``, or ``brokers:`` of ``--config``), not Ray.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from goka_ray.core.config import Config
from goka_ray.errors import ConfigError, TopicError
from goka_ray.tools.arguments import add_command, port, positive_int

__all__ = ["register"]


def _brokers(args: argparse.Namespace) -> str:
    config = Config.load(args.config) if args.config else Config()
    try:
        return config.resolve_brokers(args.brokers)
    except ConfigError:
        raise ConfigError(
            "no Kafka brokers: pass --brokers HOST:PORT or --config goka.yaml (with brokers:); "
            "`goka-ray broker` starts a local one for development"
        ) from None


def _manager(args: argparse.Namespace) -> Any:
    from goka_ray.kafka.topics import TopicManager, check_brokers

    brokers = _brokers(args)
    check_brokers(brokers)
    return TopicManager(brokers)


def _role(name: str) -> str:
    for suffix, role in (("-table", "table"), ("-loop", "loop"), ("-dlq", "dead letters")):
        if name.endswith(suffix):
            return f"{role} of group {name[: -len(suffix)]}"
    return "stream"


def _cmd_list(args: argparse.Namespace, out: Console) -> int:
    with _manager(args) as topics:
        listed = topics.list_topics(internal=args.all)
        if args.json:
            sys.stdout.write(json.dumps(listed, indent=2) + "\n")
            return 0
        if not listed:
            out.print(
                f"no topics at {topics.brokers}; create one with `goka-ray topics create NAME "
                "--partitions N`"
            )
            return 0
        table = Table(title=f"topics at {topics.brokers}", title_justify="left")
        table.add_column("topic", no_wrap=True)
        table.add_column("partitions", justify="right")
        table.add_column("role (by name)")
        for name, count in listed.items():
            table.add_row(name, str(count), _role(name))
        out.print(table)
    return 0


def _cmd_create(args: argparse.Namespace, out: Console) -> int:
    settings: dict[str, str] = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. retention.ms=86400000")
        settings[key] = value
    if args.compact:
        settings["cleanup.policy"] = "compact"
    with _manager(args) as topics:
        for name in args.names:
            existing = topics.partitions(name)
            if existing is not None:
                if args.if_not_exists and existing == args.partitions:
                    out.print(f"topic {name} exists already ({existing} partitions)")
                    continue
                raise TopicError(
                    f"topic {name!r} exists already at {topics.brokers} with {existing} "
                    "partitions"
                    + (
                        f", not {args.partitions}"
                        if existing != args.partitions
                        else "; --if-not-exists accepts that"
                    )
                )
            topics.create(name, args.partitions, settings)
            extra = f", {', '.join(f'{k}={v}' for k, v in settings.items())}" if settings else ""
            out.print(
                f"created topic {name} at {topics.brokers} ({args.partitions} partitions{extra})"
            )
    return 0


def _cmd_describe(args: argparse.Namespace, out: Console) -> int:
    described, missing = [], []
    with _manager(args) as topics:
        for name in args.names:
            try:
                described.append(topics.describe(name))
            except TopicError as exc:
                missing.append(str(exc))
    if missing and not described:
        raise TopicError(" ".join(missing))
    if args.json:
        body = [
            dataclasses.asdict(d)
            | {"cleanup_policy": d.cleanup_policy, "overrides": sorted(d.overrides)}
            for d in described
        ]
        sys.stdout.write(json.dumps(body, indent=2) + "\n")
        return 2 if missing else 0
    for d in described:
        out.print(
            f"[bold]{d.name}[/]: {d.partitions} partitions, replication factor "
            f"{d.replication_factor}, cleanup.policy {d.cleanup_policy}"
            + (" (compacted)" if d.compacted else "")
            + f"  [dim]{_role(d.name)}[/]"
        )
        shown = {k: v for k, v in d.config.items() if args.all_settings or k in d.overrides}
        if shown:
            listing = ", ".join(f"{k}={v}" for k, v in shown.items())
            what = "reported" if args.all_settings else "set on the topic"
            out.print(f"  settings {what}: {listing}", markup=False)
        else:
            out.print("  no settings set on the topic (--all-settings lists what is reported)")
        leaders = ", ".join(f"{p}:{b}" for p, b in d.leaders.items())
        out.print(f"  leader per partition: {leaders}")
    if missing:
        raise TopicError(" ".join(missing))
    return 0


def _cmd_check(args: argparse.Namespace, out: Console) -> int:
    from goka_ray.kafka.topics import copartitioning
    from goka_ray.tools.loading import load_graph

    graph = load_graph(args.target)
    with _manager(args) as topics:
        found = topics.group_topics(graph)
        count, problems = copartitioning(graph.group, found)
        compaction = {
            t.topic: topics.describe(t.topic).compacted
            for t in found
            if t.partitions is not None and t.role in ("table", "join", "lookup", "loop")
        }
        # the same check a group runs at start (topic_config_mismatch)
        problems += [m.describe(topics.brokers) for m in topics.config_mismatches(graph)]
    if args.json:
        body = {
            "group": graph.group,
            "partitions": count,
            "topics": [dataclasses.asdict(t) for t in found],
            "problems": problems,
        }
        sys.stdout.write(json.dumps(body, indent=2) + "\n")
        return 2 if problems else 0
    table = Table(title=f"topics of group {graph.group}", title_justify="left")
    for name in ("topic", "role", "co-partitioned", "partitions", "compacted"):
        table.add_column(name, no_wrap=name == "topic")
    for t in found:
        exists = t.partitions is not None
        made_by_group = t.role in ("table", "loop", "dead letters")
        table.add_row(
            t.topic,
            t.role,
            "yes" if t.copartitioned else "no",
            str(t.partitions) if exists else ("created at start" if made_by_group else "missing"),
            {True: "yes", False: "no", None: "-"}[compaction.get(t.topic)],
        )
    out.print(table)
    if problems:
        for problem in problems:
            out.print(f"[red]problem:[/] {escape(problem)}")
        return 2
    out.print(
        f"[green]ok:[/] the co-partitioned topics of {graph.group} have {count} partitions"
        if count is not None
        else f"[green]ok[/] (none of {graph.group}'s co-partitioned topics exists yet)"
    )
    return 0


_EXAMPLE_VALUE = {"int": "42", "float": "1.5", "json": '\'{"theme": "dark"}\''}


def _cmd_emit(args: argparse.Namespace, out: Console) -> int:
    from goka_ray.kafka.emitter import Emitter
    from goka_ray.tools.group_commands import CODECS

    codec = CODECS[args.codec]()
    try:  # the value as text, read by the codec (json: a JSON document, int: a number...)
        value = args.value if args.codec == "string" else codec.decode(args.value.encode())
    except Exception:
        expected = {"int": "a whole number", "float": "a number", "json": "a JSON document"}
        raise ConfigError(
            f"{args.value!r} is not a {args.codec} value: give {expected[args.codec]} "
            f"(e.g. {_EXAMPLE_VALUE[args.codec]})"
        ) from None
    with _manager(args) as topics:
        partitions = topics.describe(args.topic).partitions  # TopicError, with a suggestion
    keys = [args.key.replace("{i}", str(i)) for i in range(args.count)]
    with Emitter(topics.brokers, args.topic, codec) as emitter:
        for key in keys:
            emitter.emit(key, value)
        emitter.flush(60)
    out.print(
        f"emitted {args.count:,} message(s) to {args.topic} ({partitions} partitions) at "
        f"{topics.brokers}"
    )
    return 0


def _cmd_broker(args: argparse.Namespace, out: Console) -> int:
    from goka_ray.tools.local import LocalKafka

    broker = LocalKafka(port=args.port or None)
    broker.start()

    out.print(f"local Kafka-protocol broker on {broker.bootstrap_servers}")
    out.print(f"use it with --brokers {broker.bootstrap_servers}; Ctrl-C stops it")
    out.print("memory only: its topics are gone when it stops (for development, not production)")
    out.file.flush()
    try:
        code = broker.wait()
    except KeyboardInterrupt:
        broker.stop()
        out.print("broker stopped")
        return 0
    raise ConfigError(f"the broker exited with code {code}; its log is in {broker.log_dir}")


def _kafka_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--brokers", metavar="HOST:PORT", help="Kafka bootstrap servers (or brokers: of --config)"
    )
    parser.add_argument("--config", help="YAML config file whose brokers: to use")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``topics`` (list, create, describe, check) and ``broker`` to the parser."""
    _add_topics(sub, common)
    _add_emit(sub, common)
    _add_broker(sub, common)


def _add_topics(sub: Any, common: argparse.ArgumentParser) -> None:
    topics = add_command(
        sub,
        "topics",
        help="list, create, describe Kafka topics; check a group's topics",
        description="Kafka topics: list them, create streams and tables, describe one "
        "(partitions, settings, compaction), and check a group's topics before starting it "
        "(existence, co-partitioning, compaction).",
        examples=[
            "goka-ray topics list --brokers 127.0.0.1:9092",
            "goka-ray topics create user-clicks --partitions 4 --brokers 127.0.0.1:9092",
            "goka-ray topics describe clicks-table --brokers 127.0.0.1:9092",
            "goka-ray topics check myapp.flows:counter --config goka.yaml",
        ],
        common=common,
    )
    actions = topics.add_subparsers(dest="action", required=True, metavar="ACTION")
    _add_topics_list(actions, common)
    _add_topics_create(actions, common)
    _add_topics_describe(actions, common)
    _add_topics_check(actions, common)


def _add_topics_list(actions: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(
        actions,
        "list",
        help="every topic with its partition count",
        description="List the topics of the cluster with their partition count and, from the "
        "name, the role goka-ray gives them (stream, table, loop or dead letters of a group).",
        examples=["goka-ray topics list --brokers 127.0.0.1:9092", "goka-ray topics list --all"],
        common=common,
    )
    _kafka_options(p)
    p.add_argument("--all", action="store_true", help="include internal topics (__...)")
    p.add_argument("--json", action="store_true", help="print JSON: {topic: partitions}")
    p.set_defaults(func=_cmd_list)


def _add_topics_create(actions: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(
        actions,
        "create",
        help="create stream or table topics",
        description="Create topics. A stream topic is a plain topic; --compact makes a table "
        "topic (cleanup.policy=compact). The replication factor is the broker's default.",
        examples=[
            "goka-ray topics create user-clicks --partitions 4 --brokers 127.0.0.1:9092",
            "goka-ray topics create users --partitions 4 --compact",
            "goka-ray topics create events --partitions 8 --set retention.ms=86400000",
        ],
        common=common,
    )
    p.add_argument("names", nargs="+", metavar="TOPIC", help="topic names")
    p.add_argument("--partitions", type=positive_int, required=True, help="partition count (>= 1)")
    p.add_argument("--compact", action="store_true", help="a compacted (table) topic")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="a topic setting, e.g. retention.ms=86400000 (repeat for more)",
    )
    p.add_argument(
        "--if-not-exists",
        action="store_true",
        help="accept a topic that exists already with the same partition count",
    )
    _kafka_options(p)
    p.set_defaults(func=_cmd_create)


def _add_topics_describe(actions: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(
        actions,
        "describe",
        help="partitions, replication, settings and compaction of topics",
        description="Describe topics: partition count, replication factor, leaders, the "
        "settings that differ from the broker's defaults, and whether the topic is compacted.",
        examples=["goka-ray topics describe clicks-table user-clicks --brokers 127.0.0.1:9092"],
        common=common,
    )
    p.add_argument("names", nargs="+", metavar="TOPIC", help="topic names")
    p.add_argument(
        "--all-settings",
        action="store_true",
        help="list every setting the broker reports, defaults included",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    _kafka_options(p)
    p.set_defaults(func=_cmd_describe)


def _add_topics_check(actions: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(
        actions,
        "check",
        help="check a group's topics: existence, co-partitioning, compaction",
        description="Check the topics a group graph reads and writes before starting it: "
        "inputs and joined tables exist, every co-partitioned topic (inputs, loop, table, "
        "joins) has the same partition count, tables are compacted. Exit code 2 on a problem.",
        examples=["goka-ray topics check myapp.flows:counter --brokers 127.0.0.1:9092"],
        common=common,
    )
    p.add_argument("target", metavar="MODULE:GRAPH", help="the group graph, as for `run`")
    p.add_argument("--json", action="store_true", help="print JSON")
    _kafka_options(p)
    p.set_defaults(func=_cmd_check)


def _add_emit(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(
        sub,
        "emit",
        help="produce messages to a topic (keys partitioned as goka-ray does)",
        description="Produce COUNT messages with KEY and VALUE to an existing topic, "
        "partitioned by key with Kafka's murmur2 as every goka-ray emitter. A {i} in KEY is "
        "replaced by the message's number (0, 1, ...). For trying a group; use Emitter in code.",
        examples=[
            "goka-ray emit user-clicks alice click --brokers 127.0.0.1:9092",
            "goka-ray emit user-clicks 'user-{i}' click --count 1000 --brokers 127.0.0.1:9092",
            'goka-ray emit settings alice \'{"theme": "dark"}\' --codec json',
        ],
        common=common,
    )
    p.add_argument("topic", help="the topic (it must exist)")
    p.add_argument("key", help="the message key; {i} is replaced by the message number")
    p.add_argument("value", help="the value, as text read by --codec")
    p.add_argument(
        "--codec",
        choices=["string", "int", "float", "json"],
        default="string",
        help="how VALUE is encoded (default string)",
    )
    p.add_argument("--count", type=positive_int, default=1, help="messages to produce (default 1)")
    _kafka_options(p)
    p.set_defaults(func=_cmd_emit)


def _add_broker(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(
        sub,
        "broker",
        help="run a local Kafka-protocol broker for development (foreground)",
        description="Start the local development broker (Tansu, memory only, from the "
        "goka-ray[local] extra) on 127.0.0.1 and print its address; Ctrl-C stops it. For "
        "trying goka-ray without a Kafka cluster; never for production.",
        examples=["goka-ray broker", "goka-ray broker --port 9092"],
        common=common,
    )
    p.add_argument("--port", type=port, default=0, help="port to listen on (default: a free one)")
    p.set_defaults(func=_cmd_broker)
