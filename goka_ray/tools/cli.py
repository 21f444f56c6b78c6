"""The ``goka-ray`` command: run, inspect, scale and stop processor groups on a Ray cluster.

    goka-ray demo                                  # local broker + local Ray, no set-up
    goka-ray broker                                # a local dev broker, in the foreground
    goka-ray topics create user-clicks --partitions 4 --brokers 127.0.0.1:9092
    goka-ray run myapp.flows:counter --config goka.yaml
    goka-ray status clicks
    goka-ray scale clicks --actors 4
    goka-ray get clicks-table alice
    goka-ray stop clicks
    goka-ray monitor --port 8470

Which Ray cluster: ``--address``, else ``RAY_ADDRESS``, else the one ``ray start --head``
started on this machine (``goka_ray.ray.cluster``); commands other than ``run`` and ``demo``
never start one. Errors are one line, ``goka-ray COMMAND: error: Type: message``, exit code 2
(3 for a timeout); ``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import traceback
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from rich.console import Console

from goka_ray.errors import GokaRayError
from goka_ray.tools import group_commands, kafka_commands
from goka_ray.tools.arguments import HelpFormatter, add_command, global_options
from goka_ray.tools.console import make_console
from goka_ray.tools.loading import load_graph

__all__ = ["build_parser", "load_graph", "main"]

EXAMPLES = """\
examples:
  goka-ray demo                                      # everything local, about 20 s
  goka-ray broker                                    # a local dev broker; prints its address
  goka-ray topics create user-clicks --partitions 4 --brokers 127.0.0.1:9092
  goka-ray run goka_ray.examples:click_counter --brokers 127.0.0.1:9092
  goka-ray status clicks
  goka-ray scale clicks --actors 4
  goka-ray get clicks-table user-001
  goka-ray stop clicks

Which Ray cluster: --address, else RAY_ADDRESS, else the cluster `ray start --head` started on
this machine; never another Ray instance. `goka-ray COMMAND --help` explains each command.
"""


def _versions() -> str:
    def of(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    python = ".".join(map(str, sys.version_info[:3]))
    return (
        f"goka-ray {of('goka-ray')} (Ray {of('ray')}, confluent-kafka {of('confluent-kafka')}, "
        f"Python {python})"
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``goka-ray`` argument parser: global options, then one sub-command."""
    from goka_ray.tools import demo

    parser = argparse.ArgumentParser(
        prog="goka-ray",
        description="Run and operate goka-ray processor groups (Kafka stream processing with "
        "per-partition tables) on a Ray cluster.",
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_versions())
    global_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    global_options(common, suppress=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = add_command(
        sub,
        "demo",
        help="the local demo: broker, Ray, a click-counting group, a view (about 20 s)",
        description="Start a local Kafka-protocol broker and a local Ray, emit clicks, count "
        "them per user in the group `clicks`, read the top users through a View, check every "
        "count and exit. Needs nothing running.",
        examples=["goka-ray demo", "goka-ray demo --clicks 10000 --actors 4 --no-progress"],
        common=common,
    )
    demo.add_arguments(p)
    p.set_defaults(func=_cmd_demo)
    group_commands.register(sub, common)
    kafka_commands.register(sub, common)
    return parser


def _cmd_demo(args: argparse.Namespace, out: Console) -> int:
    from goka_ray.tools import demo

    return demo.run_from_args(args)


def _configure_logging(verbose: bool) -> None:
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # librdkafka reports every failed connection attempt; the command reports the outcome
    logging.getLogger("goka_ray.librdkafka").setLevel(level if verbose else logging.CRITICAL)


def _report(command: str, exc: BaseException, verbose: bool) -> int:
    """One line on stderr (``Type: message``, no colour codes unless a terminal); exit code."""
    from goka_ray.ray.remote import strip_ansi

    if type(exc).__module__.startswith("ray."):
        from goka_ray.ray.remote import unwrap

        exc = unwrap(exc)
    code = 3 if isinstance(exc, TimeoutError) else 2
    kind = "timed out" if code == 3 else "error"
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
    text = str(exc).strip()
    if not isinstance(exc, GokaRayError) and "\n" in text:
        # not one of ours: Ray's messages can run to a page; the first line says what it is
        text = text.splitlines()[0] + ("" if verbose else "  (-v shows the rest)")
    line = f"goka-ray {command}: {kind}: {type(exc).__name__}: {text}"
    if not sys.stderr.isatty():
        line = strip_ansi(line)
    sys.stderr.write(line + "\n")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``goka-ray`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    _configure_logging(args.verbose)
    previous = signal.getsignal(signal.SIGTERM)
    group_commands.interrupt_on_sigterm()
    out = make_console()
    command = args.command + (f" {args.action}" if getattr(args, "action", None) else "")
    try:
        code: int = args.func(args, out)
        return code
    except KeyboardInterrupt:
        return 130
    except GokaRayError as exc:
        return _report(command, exc, args.verbose)
    except Exception as exc:
        if isinstance(exc, TimeoutError) or type(exc).__module__.startswith("ray."):
            return _report(command, exc, args.verbose)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)  # main() may run inside another program


if __name__ == "__main__":
    raise SystemExit(main())
