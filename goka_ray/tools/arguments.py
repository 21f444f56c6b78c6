"""Argument checking and help layout shared by the ``goka-ray`` commands.

The CLI checks every number it is given before anything connects anywhere: a bad value ends
in argparse's usage line and one message naming the option and what it accepts (exit 2).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "HelpFormatter",
    "add_command",
    "global_options",
    "non_negative_float",
    "port",
    "positive_float",
    "positive_int",
]


def _number(kind: Callable[[str], Any], text: str, what: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def positive_int(text: str) -> int:
    """A whole number >= 1 (actors, partitions, counts)."""
    value: int = _number(int, text, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed: use a whole number >= 1")
    return value


def positive_float(text: str) -> float:
    """A number > 0 (seconds)."""
    value: float = _number(float, text, "a number")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value:g} is not allowed: use a number > 0")
    return value


def non_negative_float(text: str) -> float:
    """A number >= 0 (CPUs: 0 lets Ray place the actor anywhere)."""
    value: float = _number(float, text, "a number")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{value:g} is not allowed: use a number >= 0")
    return value


def port(text: str) -> int:
    """A TCP port, 0 (pick a free one) to 65535."""
    value: int = _number(int, text, "a port number")
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port: use 0 (any free one) to 65535")
    return value


def global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """--address, --namespace and -v: on the main parser (with defaults) and again on every
    command (``suppress``: no default, so a value before the command is kept)."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--address",
        metavar="HOST:PORT",
        default=default(None),
        help="Ray cluster to use (the head's GCS address). Without it: RAY_ADDRESS, then the "
        "cluster `ray start --head` started on this machine; never another Ray instance",
    )
    parser.add_argument(
        "--namespace",
        default=default(None),
        help="Ray namespace of the group's actors (default: goka-ray, or the config's)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default(False),
        help="show INFO logs (Ray's too) and the full traceback of an error",
    )


class HelpFormatter(argparse.HelpFormatter):
    """Wraps one-paragraph descriptions to the terminal; keeps multi-line text (the examples)
    as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def add_command(
    sub: Any,
    name: str,
    *,
    help: str,
    description: str,
    examples: Sequence[str],
    common: argparse.ArgumentParser | None,
) -> argparse.ArgumentParser:
    """A sub-command with a description and an ``examples:`` section in its --help."""
    epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples)
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help,
        description=description,
        epilog=epilog,
        parents=[common] if common is not None else [],
        formatter_class=HelpFormatter,
    )
    return parser
