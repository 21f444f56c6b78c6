"""Plain message records passed between the Kafka layer, the core and the tester."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Headers", "InputMessage", "OutgoingMessage", "headers_dict", "headers_list"]

#: Kafka headers as confluent-kafka hands them over: a list of (name, value) pairs
Headers = list[tuple[str, bytes]]


@dataclass(slots=True)
class InputMessage:
    """A raw message consumed from a stream partition (value not yet decoded)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = 0
    headers: Headers | None = None


@dataclass(slots=True)
class OutgoingMessage:
    """A message to produce. ``partition=None`` lets the group's partitioner choose by key."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers | None = None
    partition: int | None = None


def headers_list(
    headers: Mapping[str, str | bytes] | Sequence[tuple[str, str | bytes]] | None,
) -> Headers | None:
    """Normalise user headers (a dict or pairs, str or bytes values) to Kafka's pair list."""
    if not headers:
        return None
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    out: Headers = []
    for name, value in pairs:
        if not isinstance(name, str):
            raise TypeError(f"header name {name!r} must be str")
        if isinstance(value, str):
            value = value.encode("utf-8")
        elif not isinstance(value, bytes | bytearray):
            raise TypeError(f"header {name!r} value {value!r} must be str or bytes")
        out.append((name, bytes(value)))
    return out


def headers_dict(headers: Headers | None) -> dict[str, bytes]:
    """Kafka's pair list as a dict (the last value of a repeated name wins)."""
    return {name: (value if value is not None else b"") for name, value in headers or ()}
