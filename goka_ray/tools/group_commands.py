"""The ``goka-ray`` commands that operate processor groups on a Ray cluster.

``run`` starts a group (on the cluster ``find_cluster`` names, else on a local Ray that lives
as long as the command); ``status``, ``scale``, ``get``, ``stop`` and ``monitor`` connect to a
running cluster and never start one. Commands that change something first say which cluster
and namespace they act on.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import time
from types import FrameType
from typing import Any

from rich.console import Console
from rich.live import Live

from goka_ray.core import codecs
from goka_ray.core.config import Config
from goka_ray.core.keys import decode_key, encode_key
from goka_ray.errors import ConfigError
from goka_ray.tools.arguments import (
    add_command,
    non_negative_float,
    port,
    positive_float,
    positive_int,
)
from goka_ray.tools.console import status_table
from goka_ray.tools.loading import load_graph

__all__ = ["CODECS", "register"]

DEFAULT_NAMESPACE = "goka-ray"

#: codecs that ``goka-ray get --codec`` knows by name
CODECS: dict[str, type[codecs.Codec]] = {
    "string": codecs.String,
    "int": codecs.Int,
    "float": codecs.Float,
    "bytes": codecs.Bytes,
    "json": codecs.Json,
    "pickle": codecs.Pickle,
}


def interrupt_on_sigterm() -> None:
    """``kill`` (SIGTERM) ends a foreground command as Ctrl-C does (run --wait stops its group,
    monitor closes). Called again after connecting: Ray's core installs its own handler,
    which only dumps a stack and exits."""
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def ray_logging_level(args: argparse.Namespace) -> int:
    """Ray's own logging: errors only, unless ``-v``."""
    return logging.INFO if args.verbose else logging.ERROR


def _connect(args: argparse.Namespace, out: Console, namespace: str, *, changes: bool) -> Any:
    """Connect to the running cluster; say which one (always when the command changes
    something, else with -v, on stderr so that --json output stays clean)."""
    from goka_ray.ray.cluster import connect

    found = connect(namespace, args.address, logging_level=ray_logging_level(args))
    interrupt_on_sigterm()
    if changes:
        _announce(out, found, namespace)
    elif args.verbose:
        _announce(Console(stderr=True), found, namespace)
    return found


def _announce(out: Console, found: Any, namespace: str) -> None:
    out.print(
        f"Ray cluster {found.address} ({found.source}), namespace {namespace!r}",
        soft_wrap=True,  # one line, however narrow the terminal: easy to grep in a log
    )


def _attach(args: argparse.Namespace, group: str) -> Any:
    from goka_ray.ray.processor import Processor

    return Processor.attach(
        group, namespace=args.namespace or DEFAULT_NAMESPACE, address=args.address
    )


# -- run ------------------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace, out: Console) -> int:
    from goka_ray.kafka.topics import check_brokers
    from goka_ray.ray.cluster import ensure_ray, find_cluster
    from goka_ray.ray.processor import Processor

    graph = load_graph(args.target)
    config = Config.load(args.config) if args.config else Config()
    if args.namespace:
        config = dataclasses.replace(config, namespace=args.namespace)
    brokers = config.resolve_brokers(args.brokers)
    check_brokers(brokers)
    local = find_cluster(args.address) is None
    if local:
        out.print("no Ray cluster named (--address, RAY_ADDRESS, or `ray start --head` here):")
        out.print("starting a local Ray in this process; the group stops when this command ends")
        found = ensure_ray(config.namespace, logging_level=ray_logging_level(args))
        interrupt_on_sigterm()
        _announce(out, found, config.namespace)
    else:
        _connect(args, out, config.namespace, changes=True)
    processor = Processor(brokers, graph, config)
    _start_or_upgrade(processor, graph, args, out)
    if not (local or args.wait):
        out.print(status_table(processor.status(), out.width))
        out.print(
            f"group [cyan]{graph.group}[/] runs on the cluster; "
            f"`goka-ray status {graph.group}` to watch it, `goka-ray stop {graph.group}` to stop it"
        )
        return 0
    out.print("running; Ctrl-C stops the group")
    try:
        status = _follow(processor, out, args.interval)
    except KeyboardInterrupt:
        out.print("stopping the group...")
        processor.stop()
        return 0
    if status.state == "failed":
        processor.wait(timeout=5)  # raises the failure with its coordinates
    return 0


def _follow(processor: Any, out: Console, interval: float) -> Any:
    """Show the group's status until it fails or stops: a table updated in place on a
    terminal, a line per change of state or lag otherwise (log files). Returns the last."""
    status = processor.status()
    if out.is_terminal:
        with Live(status_table(status, out.width), console=out, auto_refresh=False) as live:
            while status.state not in ("failed", "stopped"):
                time.sleep(interval)
                status = processor.status()
                live.update(status_table(status, out.width), refresh=True)
        return status
    last = None
    while True:
        processed = sum(p.processed for p in status.partitions)
        line = f"group {status.group}: {status.state}, lag {status.lag:,}, processed {processed:,}"
        if line != last:
            out.print(f"{time.strftime('%H:%M:%S')} {line}")
            last = line
        if status.state in ("failed", "stopped"):
            out.print(status_table(status, out.width))
            return status
        time.sleep(interval)
        status = processor.status()


def _start_or_upgrade(processor: Any, graph: Any, args: argparse.Namespace, out: Console) -> None:
    """Start the group, or attach to it if it runs this code; with ``--upgrade``, move a group
    that runs other code to this code live (without it: CodeChangedError, nothing changes)."""
    from goka_ray.core.fingerprint import fingerprint
    from goka_ray.errors import CodeChangedError

    try:
        processor.start()
    except CodeChangedError as exc:
        if not args.upgrade:
            raise
        code = fingerprint(graph).short
        out.print(
            f"group {graph.group} runs code {exc.running}; upgrading it to code {code} "
            f"({', '.join(exc.changes)}), one actor at a time",
            soft_wrap=True,
        )
        processor.upgrade(graph, wait=False)
        _wait_with_progress(processor, args.timeout, code=code)
        return
    _wait_with_progress(processor, args.timeout)


def _wait_with_progress(processor: Any, timeout: float, code: str | None = None) -> None:
    """Block until every partition runs (on ``code`` while upgrading), with a progress bar;
    says why actors are pending when Ray cannot place them."""
    from tqdm import tqdm

    deadline = time.monotonic() + timeout
    # on a terminal the bar moves; in a log (piped) a line every 5 s at most
    every = 0.1 if sys.stderr.isatty() else 5.0
    desc = "partitions ready" if code is None else f"partitions on code {code}"
    waiting = None
    with tqdm(desc=desc, unit="partition", file=sys.stderr, mininterval=every) as bar:
        while True:
            status = processor.status()
            if status.state == "failed":
                processor.wait(timeout=5)
            bar.total = len(status.partitions)
            done = [p.state == "running" and code in (None, p.code) for p in status.partitions]
            recovered = sum(p.recovered for p in status.partitions)
            bar.set_postfix(recovered_records=f"{recovered:,}", refresh=False)
            bar.update(sum(done) - bar.n)
            if status.waiting and status.waiting != waiting:
                bar.write(f"group {processor.group}: {status.waiting}", file=sys.stderr)
            waiting = status.waiting
            if status.ready and all(done) and status.state == "running":
                return
            if time.monotonic() > deadline:
                why = f"; {status.waiting}" if status.waiting else ""
                states = ", ".join(f"{p.partition} {p.state}" for p in status.partitions)
                raise TimeoutError(
                    f"group {processor.group} not ready after {timeout:g}s; "
                    f"partitions: {states}{why}"
                )
            time.sleep(0.25)


# -- status ---------------------------------------------------------------------------------------


def _cmd_status(args: argparse.Namespace, out: Console) -> int:
    from goka_ray.ray.cluster import list_groups

    namespace = args.namespace or DEFAULT_NAMESPACE
    found = _connect(args, out, namespace, changes=False)
    if args.group:
        processors = [_attach(args, args.group)]
    else:
        processors = [_attach(args, g) for g in list_groups(namespace)]
        if not processors and not args.json:
            out.print(
                f"no processor group runs in Ray namespace {namespace!r} on the Ray cluster "
                f"at {found.address}; start one with `goka-ray run MODULE:GRAPH`",
                soft_wrap=True,
            )
    if args.watch and out.is_terminal and not args.json:
        try:
            with Live(console=out, auto_refresh=False) as live:
                while True:
                    live.update(_status_tables(processors, out), refresh=True)
                    time.sleep(args.watch)
        except KeyboardInterrupt:
            return 0
    while True:
        statuses = [p.status() for p in processors]
        if args.json:
            body: Any = [s.as_dict() for s in statuses]
            if args.group:
                body = body[0]
            sys.stdout.write(json.dumps(body, indent=2) + "\n")
        else:
            for s in statuses:
                out.print(status_table(s, out.width))
        if not args.watch:
            return 1 if any(s.state == "failed" for s in statuses) else 0
        time.sleep(args.watch)


def _status_tables(processors: list[Any], out: Console) -> Any:
    from rich.console import Group

    return Group(*(status_table(p.status(), out.width) for p in processors))


# -- scale ----------------------------------------------------------------------------------------


def _cmd_scale(args: argparse.Namespace, out: Console) -> int:
    changes: dict[str, Any] = {}
    if args.actors is not None:
        changes["actors"] = args.actors
    if args.num_cpus is not None:
        changes["num_cpus"] = args.num_cpus
    if args.partitions_per_actor is not None:
        changes["partitions_per_actor"] = args.partitions_per_actor
        changes.setdefault("actors", None)
    if not changes:
        raise ConfigError(
            "nothing to scale: give --actors N, --num-cpus X or --partitions-per-actor N"
        )
    _connect(args, out, args.namespace or DEFAULT_NAMESPACE, changes=True)
    processor = _attach(args, args.group)
    config = processor.config.group(args.group)
    actors = len({p.actor_name for p in processor.status().partitions if p.actor_name})
    before = {**dataclasses.asdict(config), "actors": actors}
    if not processor.scale(**changes):
        out.print(f"group {args.group} already runs like that; nothing moved")
        return 0
    moves = ", ".join(
        f"{k} {before[k]} -> {v}" for k, v in changes.items() if v is not None or k != "actors"
    )
    out.print(f"scaling {args.group}: {moves}")
    if args.no_wait:
        return 0
    _wait_with_progress(processor, args.timeout)  # says why new actors wait, if they do
    out.print(status_table(processor.status(), out.width))
    return 0


# -- get ------------------------------------------------------------------------------------------


def _cmd_get(args: argparse.Namespace, out: Console) -> int:
    from goka_ray.ray.cluster import list_views
    from goka_ray.ray.view import View

    group = args.table[: -len("-table")] if args.table.endswith("-table") else None
    if args.codec is None and group is None:
        raise ConfigError(
            f"{args.table!r} is not a group table (<group>-table); give its codec with "
            f"--codec {{{','.join(CODECS)}}}"
        )
    key = _key_bytes(args.key, args.hex)  # checked before anything connects
    config = Config.load(args.config) if args.config else Config()
    namespace = args.namespace or (config.namespace if args.config else DEFAULT_NAMESPACE)
    _connect(args, out, namespace, changes=False)
    existed = args.table in list_views(namespace)
    if args.codec is None:
        assert group is not None
        view = _attach(args, group).view()
    else:
        config = dataclasses.replace(config, namespace=namespace)
        view = View(config.resolve_brokers(args.brokers), args.table, CODECS[args.codec](), config)
        view.start()
    try:
        view.wait_ready(args.timeout)
        value = view.get(key)
    finally:
        if not (existed or args.keep_view):
            view.stop()  # a view this command started must not hold cluster resources
    if args.json:
        text = decode_key(key)
        body = {"table": args.table, "key": text, "key_hex": key.hex(), "value": value}
        sys.stdout.write(json.dumps(body, default=repr) + "\n")
    elif value is None:
        out.print(f"{decode_key(key)!r} is not in {args.table}", markup=False)
        return 1
    else:
        out.print(repr(value) if not isinstance(value, str) else value, markup=False)
    return 0


def _key_bytes(key: str, is_hex: bool) -> bytes:
    """The key bytes ``goka-ray get`` reads: the argument's own bytes (as the shell passed
    them, so a key that is not UTF-8 works too), or with ``--hex`` the bytes it spells."""
    if not is_hex:
        return encode_key(key)  # argv text holds undecodable bytes as surrogates (PEP 383)
    try:
        return bytes.fromhex(key)
    except ValueError:
        raise ConfigError(
            f"--hex {key!r}: give the key as hex digits, two per byte (e.g. 00856d6163)"
        ) from None


# -- stop, monitor --------------------------------------------------------------------------------


def _cmd_stop(args: argparse.Namespace, out: Console) -> int:
    _connect(args, out, args.namespace or DEFAULT_NAMESPACE, changes=True)
    processor = _attach(args, args.group)
    processor.stop()
    out.print(f"group {args.group} stopped (offsets committed, actors removed)")
    return 0


def _cmd_monitor(args: argparse.Namespace, out: Console) -> int:
    from goka_ray.tools.monitor import serve

    namespace = args.namespace or DEFAULT_NAMESPACE
    found = _connect(args, out, namespace, changes=True)
    try:
        server = serve(
            namespace,
            host=args.host,
            port=args.port,
            cluster=found.address,
            interval=args.refresh,
            view_idle=args.view_idle,
        )
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}; pick another "
            "--port (0 picks a free one)"
        ) from None
    out.print(f"goka-ray monitor on http://{args.host}:{server.server_port}/  (Ctrl-C to quit)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


# -- the parsers ----------------------------------------------------------------------------------


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add run, status, scale, get, stop and monitor to the ``goka-ray`` parser."""
    _add_run(sub, common)
    _add_status(sub, common)
    _add_scale(sub, common)
    _add_get(sub, common)
    _add_stop(sub, common)
    _add_monitor(sub, common)


def _add_run(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(
        sub,
        "run",
        help="start a processor group (MODULE:GRAPH) on the cluster",
        description="Start a processor group. On a running Ray cluster it returns once every "
        "partition is recovered and the group keeps running; with no cluster named it starts a "
        "local Ray and stays in the foreground (Ctrl-C stops the group). A group that runs "
        "already is attached to if it runs this graph and code; if it runs other code, run "
        "says what changed and changes nothing, unless --upgrade. A group whose actors do not "
        "fit the cluster's free resources fails at once, naming what is missing.",
        examples=[
            "goka-ray run myapp.flows:counter --config goka.yaml",
            "goka-ray run goka_ray.examples:click_counter --brokers 127.0.0.1:9092 --wait",
            "goka-ray run myapp.flows:counter --config goka.yaml --upgrade",
        ],
        common=common,
    )
    p.add_argument(
        "target",
        metavar="MODULE:GRAPH",
        help="a GroupGraph (the result of define_group) or a function without arguments "
        "returning one, importable from the current directory",
    )
    p.add_argument("--config", help="YAML config file (every key: goka.yaml in the repository)")
    p.add_argument(
        "--brokers", metavar="HOST:PORT", help="Kafka bootstrap servers (overrides the config)"
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="stay in the foreground showing the status; Ctrl-C stops the group",
    )
    p.add_argument(
        "--upgrade",
        action="store_true",
        help="if the group runs other code, move it to this code live: one actor at a time, "
        "a new actor recovers its partitions and the old one hands them over (without it, "
        "run refuses to attach to a group that runs other code)",
    )
    p.add_argument(
        "--interval",
        type=positive_float,
        default=5.0,
        metavar="SECONDS",
        help="seconds between status updates with --wait (default 5)",
    )
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=600.0,
        metavar="SECONDS",
        help="seconds to wait for every partition to recover (default 600)",
    )
    p.set_defaults(func=_cmd_run)


def _add_status(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(
        sub,
        "status",
        help="per-partition status of a group (or of every group)",
        description="Show each partition's state, actor, node, offsets, lag, keys, processed "
        "messages, restarts and epoch. Exit code 1 if a group has failed.",
        examples=["goka-ray status", "goka-ray status clicks --watch 2", "goka-ray status --json"],
        common=common,
    )
    p.add_argument("group", nargs="?", help="the group (default: every group of the namespace)")
    p.add_argument(
        "--watch",
        type=positive_float,
        metavar="SECONDS",
        help="update every SECONDS until Ctrl-C",
    )
    p.add_argument("--json", action="store_true", help="print JSON (a list without GROUP)")
    p.set_defaults(func=_cmd_status)


def _add_scale(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(
        sub,
        "scale",
        help="change the actors or resources of a running group, live",
        description="Change how a running group is spread over actors, live: new owners "
        "recover each moved partition first, then the old ones hand it over. Waits until every "
        "moved partition runs again.",
        examples=[
            "goka-ray scale clicks --actors 4",
            "goka-ray scale clicks --partitions-per-actor 2",
            "goka-ray scale clicks --num-cpus 0.5 --no-wait",
        ],
        common=common,
    )
    p.add_argument("group", help="the running group")
    p.add_argument("--actors", type=positive_int, help="number of partition actors (>= 1)")
    p.add_argument(
        "--num-cpus",
        type=non_negative_float,
        metavar="CPUS",
        help="Ray CPUs reserved per partition actor (>= 0, e.g. 0.25)",
    )
    p.add_argument(
        "--partitions-per-actor",
        type=positive_int,
        metavar="N",
        help="partitions packed into one actor (>= 1; clears a fixed --actors)",
    )
    p.add_argument("--no-wait", action="store_true", help="return before the moves finish")
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=300.0,
        metavar="SECONDS",
        help="seconds to wait for the moves (default 300)",
    )
    p.set_defaults(func=_cmd_scale)


def _add_get(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(
        sub,
        "get",
        help="read a key from a table through a view",
        description="Read one key through a View. A group's table (<group>-table) is decoded "
        "with the group's codec; other tables need --codec. View actors this command starts "
        "are removed when it ends, unless --keep-view.",
        examples=[
            "goka-ray get clicks-table user-001",
            "goka-ray get clicks-table user-001 --json",
            "goka-ray get macs-table 00856d6163 --hex    # a key that is not text",
            "goka-ray get users --codec json --brokers 127.0.0.1:9092",
        ],
        common=common,
    )
    p.add_argument("table", help="the table topic, e.g. clicks-table")
    p.add_argument("key", help="the key to read (its bytes as given, or hex with --hex)")
    p.add_argument(
        "--hex", action="store_true", help="KEY is hex digits, for keys that are not text"
    )
    p.add_argument("--codec", choices=sorted(CODECS), help="value codec (tables of no group)")
    p.add_argument("--brokers", metavar="HOST:PORT", help="Kafka bootstrap servers (with --codec)")
    p.add_argument("--config", help="YAML config file (with --codec)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--keep-view",
        action="store_true",
        help="leave the view actors running for the next reads (they hold cluster resources)",
    )
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=60.0,
        metavar="SECONDS",
        help="seconds to wait for the view to catch up (default 60)",
    )
    p.set_defaults(func=_cmd_get)


def _add_stop(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(
        sub,
        "stop",
        help="stop a group (commit, then remove its actors)",
        description="Stop a group: its partitions finish their batch and commit their offsets, "
        "then every actor of the group is removed. Its tables stay in Kafka.",
        examples=["goka-ray stop clicks"],
        common=common,
    )
    p.add_argument("group", help="the running group")
    p.set_defaults(func=_cmd_stop)


def _add_monitor(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add_command(
        sub,
        "monitor",
        help="web monitor: groups, partitions, lag and throughput charts, key lookup",
        description="Serve a web page with every group of the namespace (state, error, "
        "partitions, throughput and lag over the last minutes) and a JSON API.",
        examples=["goka-ray monitor", "goka-ray monitor --port 0 --host 127.0.0.1"],
        common=common,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--port", type=port, default=8470, help="port to listen on (default 8470; 0 picks one)"
    )
    p.add_argument(
        "--refresh",
        type=positive_float,
        default=2.0,
        metavar="SECONDS",
        help="seconds between status samples of every group (default 2)",
    )
    p.add_argument(
        "--view-idle",
        type=positive_float,
        default=120.0,
        metavar="SECONDS",
        help="view actors a key lookup had to start hold cluster resources: remove them this "
        "many seconds after their last lookup (default 120), and when the monitor ends",
    )
    p.set_defaults(func=_cmd_monitor)
