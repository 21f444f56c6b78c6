"""The ``goka-ray`` command: run, inspect, scale and stop processor groups on a Ray cluster.

    goka-ray demo                                  # local broker + local Ray, no set-up
    goka-ray run myapp.flows:counter --config goka.yaml
    goka-ray status clicks
    goka-ray scale clicks --actors 4
    goka-ray get clicks-table alice
    goka-ray stop clicks
    goka-ray monitor --port 8470

Commands other than ``run`` and ``demo`` connect to a running cluster (``--address``,
``RAY_ADDRESS`` or the local one) and never start one.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console

from goka_ray.core import codecs
from goka_ray.core.config import Config
from goka_ray.core.graph import GroupGraph
from goka_ray.errors import ConfigError, GokaRayError, GraphError
from goka_ray.tools.console import make_console, status_table

__all__ = ["load_graph", "main"]

logger = logging.getLogger(__name__)

#: codecs that ``goka-ray get --codec`` knows by name
CODECS: dict[str, Callable[[], codecs.Codec]] = {
    "string": codecs.String,
    "int": codecs.Int,
    "float": codecs.Float,
    "bytes": codecs.Bytes,
    "json": codecs.Json,
    "pickle": codecs.Pickle,
}


def load_graph(target: str) -> GroupGraph:
    """Import ``MODULE:NAME``; NAME is a GroupGraph or a function without arguments returning one.

    The current directory is importable, as with ``python -m``.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"{target!r}: expected MODULE:NAME, e.g. myapp.flows:counter "
            "(NAME is a GroupGraph or a function returning one)"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"cannot import module {module_name!r}: {exc}. Run goka-ray from the directory "
            "that contains it, or install it in this environment."
        ) from exc
    try:
        obj = getattr(module, attr)
    except AttributeError:
        names = sorted(n for n, v in vars(module).items() if isinstance(v, GroupGraph))
        raise ConfigError(
            f"module {module_name!r} has no {attr!r}"
            + (f"; group graphs it defines: {', '.join(names)}" if names else "")
        ) from None
    if callable(obj) and not isinstance(obj, GroupGraph):
        obj = obj()
    if not isinstance(obj, GroupGraph):
        raise GraphError(
            f"{target} is a {type(obj).__name__}, not a GroupGraph; point at the result of "
            "define_group(...) or at a function that returns one"
        )
    _ship_by_value(module)
    return obj


def _ship_by_value(module: Any) -> None:
    """Callbacks of a module that is not installed travel to the actors by value."""
    from ray import cloudpickle  # Ray's own copy: the one that pickles actor arguments

    path = getattr(module, "__file__", None) or ""
    if "site-packages" not in path and "dist-packages" not in path:
        cloudpickle.register_pickle_by_value(module)  # type: ignore[no-untyped-call]


# -- commands -------------------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace, out: Console) -> int:
    from goka_ray.tools import demo

    return demo.run_from_args(args)


def _cmd_run(args: argparse.Namespace, out: Console) -> int:
    import ray

    from goka_ray.kafka.topics import check_brokers
    from goka_ray.ray.cluster import NoClusterError, connect
    from goka_ray.ray.processor import Processor

    graph = load_graph(args.target)
    config = Config.load(args.config) if args.config else Config()
    if args.namespace:
        config = dataclasses.replace(config, namespace=args.namespace)
    brokers = config.resolve_brokers(args.brokers)
    check_brokers(brokers)
    local = False
    try:
        connect(config.namespace, args.address)
    except NoClusterError:
        if args.address or os.environ.get("RAY_ADDRESS"):
            raise
        out.print(
            "no Ray cluster running: starting a local one (the group stops with this command)"
        )
        ray.init(namespace=config.namespace, include_dashboard=False, log_to_driver=False)
        local = True
    processor = Processor(brokers, graph, config)
    processor.start()
    _wait_with_progress(processor, args.timeout, out)
    out.print(status_table(processor.status()))
    if not (local or args.wait):
        out.print(
            f"group [cyan]{graph.group}[/] runs on the cluster; "
            f"`goka-ray status {graph.group}` to watch it, `goka-ray stop {graph.group}` to stop it"
        )
        return 0
    out.print("running; Ctrl-C stops the group")
    try:
        while True:
            time.sleep(args.interval)
            status = processor.status()
            if status.state in ("failed", "stopped"):
                out.print(status_table(status))
                processor.wait(timeout=1)  # raises the failure with its coordinates
                return 0
            out.print(status_table(status))
    except KeyboardInterrupt:
        out.print("stopping the group...")
        processor.stop()
        return 0


def _wait_with_progress(processor: Any, timeout: float, out: Console) -> None:
    """Block until every partition runs, with a progress bar over recovering partitions."""
    from tqdm import tqdm

    deadline = time.monotonic() + timeout
    with tqdm(desc="partitions ready", unit="partition", file=sys.stderr) as bar:
        while True:
            status = processor.status()
            if status.state == "failed":
                processor.wait(timeout=1)
            bar.total = len(status.partitions)
            running = sum(p.state == "running" for p in status.partitions)
            recovered = sum(p.recovered for p in status.partitions)
            bar.set_postfix(recovered_records=f"{recovered:,}", refresh=False)
            bar.update(running - bar.n)
            if status.ready:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"group {processor.group} not ready after {timeout:g}s; "
                    f"states: {[p.state for p in status.partitions]}"
                )
            time.sleep(0.25)


def _attach(args: argparse.Namespace, group: str) -> Any:
    from goka_ray.ray.processor import Processor

    return Processor.attach(group, namespace=args.namespace or "goka-ray", address=args.address)


def _cmd_status(args: argparse.Namespace, out: Console) -> int:
    from goka_ray.ray.cluster import connect, list_groups

    namespace = args.namespace or "goka-ray"
    if not args.group:
        connect(namespace, args.address)
        groups = list_groups(namespace)
        if not groups:
            out.print(f"no processor group runs in Ray namespace {namespace!r}")
        for group in groups:
            out.print(status_table(_attach(args, group).status()))
        return 0
    processor = _attach(args, args.group)
    while True:
        status = processor.status()
        if args.json:
            sys.stdout.write(json.dumps(dataclasses.asdict(status), indent=2) + "\n")
        else:
            out.print(status_table(status))
        if not args.watch:
            return 1 if status.state == "failed" else 0
        time.sleep(args.watch)


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
    processor = _attach(args, args.group)
    if not processor.scale(**changes):
        out.print(f"group {args.group} already runs like that; nothing moved")
        return 0
    out.print(f"scaling {args.group}: {changes}")
    if args.no_wait:
        return 0
    out.print(status_table(processor.wait_scaled(args.timeout)))
    return 0


def _cmd_get(args: argparse.Namespace, out: Console) -> int:
    from goka_ray.ray.view import View

    value = None
    group = args.table[: -len("-table")] if args.table.endswith("-table") else None
    if args.codec is None and group is None:
        raise ConfigError(
            f"{args.table!r} is not a group table (<group>-table); give its codec with "
            f"--codec {{{','.join(CODECS)}}}"
        )
    if args.codec is None:
        assert group is not None
        view = _attach(args, group).view()
    else:
        from goka_ray.ray.cluster import connect

        config = Config.load(args.config) if args.config else Config()
        namespace = args.namespace or config.namespace
        connect(namespace, args.address)
        config = dataclasses.replace(config, namespace=namespace)
        view = View(config.resolve_brokers(args.brokers), args.table, CODECS[args.codec](), config)
        view.start()
    view.wait_ready(args.timeout)
    value = view.get(args.key)
    if args.json:
        sys.stdout.write(json.dumps({"table": args.table, "key": args.key, "value": value}) + "\n")
    elif value is None:
        out.print(f"{args.key!r} is not in {args.table}")
        return 1
    else:
        out.print(repr(value) if not isinstance(value, str) else value)
    return 0


def _cmd_stop(args: argparse.Namespace, out: Console) -> int:
    processor = _attach(args, args.group)
    processor.stop()
    out.print(f"group {args.group} stopped (offsets committed, actors removed)")
    return 0


def _cmd_monitor(args: argparse.Namespace, out: Console) -> int:
    from goka_ray.ray.cluster import connect
    from goka_ray.tools.monitor import serve

    namespace = args.namespace or "goka-ray"
    connect(namespace, args.address)
    server = serve(namespace, host=args.host, port=args.port)
    out.print(f"goka-ray monitor on http://{args.host}:{server.server_port}/  (Ctrl-C to quit)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


# -- parser ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from goka_ray.tools import demo

    parser = argparse.ArgumentParser(
        prog="goka-ray",
        description="Run and operate goka-ray processor groups on a Ray cluster.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or local)")
    parser.add_argument("--namespace", help="Ray namespace of the actors (default: goka-ray)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="local broker + local Ray click-count demo")
    demo.add_arguments(p)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("run", help="start a processor group (MODULE:GRAPH)")
    p.add_argument("target", metavar="MODULE:GRAPH")
    p.add_argument("--config", help="YAML config file (see the README's config reference)")
    p.add_argument("--brokers", help="Kafka bootstrap servers (overrides the config)")
    p.add_argument("--wait", action="store_true", help="stay in the foreground, print status")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between status prints")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for recovery")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("status", help="per-partition status of a group (or of all groups)")
    p.add_argument("group", nargs="?")
    p.add_argument("--watch", type=float, metavar="SECONDS", help="repeat every SECONDS")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("scale", help="change actors or resources of a running group")
    p.add_argument("group")
    p.add_argument("--actors", type=int, help="number of partition actors")
    p.add_argument("--num-cpus", type=float, help="CPUs per partition actor")
    p.add_argument("--partitions-per-actor", type=int, help="partitions packed into one actor")
    p.add_argument("--no-wait", action="store_true", help="return before the moves finish")
    p.add_argument("--timeout", type=float, default=300.0)
    p.set_defaults(func=_cmd_scale)

    p = sub.add_parser("get", help="read a key from a table through a view")
    p.add_argument("table")
    p.add_argument("key")
    p.add_argument("--codec", choices=sorted(CODECS), help="value codec (tables of other groups)")
    p.add_argument("--brokers", help="Kafka bootstrap servers (with --codec)")
    p.add_argument("--config", help="YAML config file (with --codec)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--timeout", type=float, default=60.0)
    p.set_defaults(func=_cmd_get)

    p = sub.add_parser("stop", help="stop a group (commit, then remove its actors)")
    p.add_argument("group")
    p.set_defaults(func=_cmd_stop)

    p = sub.add_parser("monitor", help="web monitor: groups, partitions, lag, key lookup")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8470, help="0 picks a free port")
    p.set_defaults(func=_cmd_monitor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``goka-ray`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    out = make_console()
    try:
        code: int = args.func(args, out)
        return code
    except GokaRayError as exc:
        sys.stderr.write(f"goka-ray {args.command}: error: {exc}\n")
        return 2
    except TimeoutError as exc:
        sys.stderr.write(f"goka-ray {args.command}: timed out: {exc}\n")
        return 3
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
