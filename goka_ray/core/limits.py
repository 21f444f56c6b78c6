"""Record limits: whether a record goka-ray is to produce fits the producer's size limit.

Checked in the core, per message, before anything is produced, so a record that Kafka would
refuse never starts a batch that cannot be published, and the Tester refuses exactly what the
runtime refuses. The size is the one librdkafka compares with ``message.max.bytes`` (default
1,000,000 bytes): key, value and headers plus the worst-case per-record overhead of the
record format (MsgVersion 2).

Invariants: pure arithmetic, no I/O; a record passes :meth:`RecordLimit.check` only if
librdkafka would accept it with ``message.max.bytes = max_message_bytes`` once the runtime
added at most ``reserved_bytes`` of headers of its own (the writer's epoch, transaction
markers).
"""

from __future__ import annotations

from dataclasses import dataclass

from goka_ray.core.messages import Headers
from goka_ray.errors import RecordRejected

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "EPOCH_HEADER_BYTES",
    "RECORD_OVERHEAD",
    "RecordLimit",
    "header_bytes",
    "record_size",
]

#: librdkafka's default ``message.max.bytes``
DEFAULT_MAX_MESSAGE_BYTES = 1_000_000
#: the worst-case bytes a record adds to its key, value and headers (MsgVersion 2: length,
#: attributes, timestamp and offset deltas, key and value lengths, header count)
RECORD_OVERHEAD = 5 + 1 + 10 + 5 + 5 + 5 + 5
#: the most a runner's epoch header (``goka-ray.epoch``) adds to a changelog record
EPOCH_HEADER_BYTES = 40


def _varint_bytes(n: int) -> int:
    """Bytes of a zigzag varint of ``n`` (n >= 0), as Kafka encodes header lengths."""
    n <<= 1
    size = 1
    while n >= 0x80:
        n >>= 7
        size += 1
    return size


def header_bytes(headers: Headers | None) -> int:
    """The serialized size of Kafka record headers."""
    total = 0
    for name, value in headers or ():
        name_len = len(name.encode()) if isinstance(name, str) else len(name)
        value_len = len(value) if value is not None else 0
        total += name_len + value_len + _varint_bytes(name_len) + _varint_bytes(value_len)
    return total


def record_size(key: bytes | None, value: bytes | None, headers: Headers | None = None) -> int:
    """The size librdkafka checks against ``message.max.bytes`` (bytes)."""
    return (
        RECORD_OVERHEAD
        + (len(key) if key is not None else 0)
        + (len(value) if value is not None else 0)
        + header_bytes(headers)
    )


@dataclass(frozen=True)
class RecordLimit:
    """The largest record a group may produce (bytes, ``max_message_bytes``), and how much
    of it the runtime keeps for headers of its own (``reserved_bytes``)."""

    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    reserved_bytes: int = EPOCH_HEADER_BYTES

    def check(
        self,
        what: str,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
    ) -> RecordRejected | None:
        """None if the record fits; else the error that says so. ``what`` names the record
        (``"changelog record"``, ``"emit"``, ``"loopback"``, ``"dead letter"``)."""
        size = record_size(key, value, headers) + self.reserved_bytes
        if size <= self.max_message_bytes:
            return None
        shown = key.decode("utf-8", "backslashreplace") if key is not None else None
        return RecordRejected(
            f"the {what} to {topic!r} for key {shown!r} is {size:,} bytes (value "
            f"{len(value or b''):,} bytes), more than max_message_bytes = "
            f"{self.max_message_bytes:,} (the producer's message.max.bytes); Kafka would "
            f"refuse it. Store or emit less per key, or raise max_message_bytes together with "
            f"the topic's max.message.bytes on the broker",
            topic=topic,
            key=shown,
            size=size,
            limit=self.max_message_bytes,
            reason="MSG_SIZE_TOO_LARGE",
        )
