"""Keys: Kafka keys are bytes; goka-ray hands them to your code as lossless text.

A key is decoded as UTF-8 with ``surrogateescape`` (PEP 383): a key that is valid UTF-8 reads
as the text it spells, and every byte that is not (say, ``b"\\x00\\x85mac"`` written by a Goka
service sharing the topic) becomes a lone surrogate (``"\\x00\\udc85mac"``) that encodes back
to exactly the same byte. So every key read from Kafka, a changelog or a view round-trips:
``encode_key(decode_key(raw)) == raw``. Everywhere goka-ray takes a key (``ctx.emit``,
``ctx.lookup``, ``Emitter.emit``, ``View.get``, ``Tester.consume``...) it accepts such a str or
the raw bytes.

Invariant: the only place where key text and key bytes are converted into each other.
"""

from __future__ import annotations

__all__ = ["decode_key", "encode_key"]


def encode_key(key: str | bytes | bytearray | memoryview, where: str = "key") -> bytes:
    """The Kafka key bytes of ``key``: a str is encoded as UTF-8, losslessly (surrogateescape).

    Raises TypeError naming ``where`` for anything that is not str or bytes, and for text with
    surrogates that stand for no byte (only ``\\udc80``-``\\udcff`` do).
    """
    if isinstance(key, str):
        try:
            return key.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError as exc:
            raise TypeError(
                f"{where}: {key!r:.60} cannot be a Kafka key ({exc.reason} at position "
                f"{exc.start}); pass the key as bytes, or as the text goka-ray gave you"
            ) from None
    if isinstance(key, bytes | bytearray | memoryview):
        return bytes(key)
    raise TypeError(f"{where}: a key must be str or bytes, not {type(key).__name__} {key!r:.40}")


def decode_key(raw: bytes) -> str:
    """The text of Kafka key bytes: UTF-8, with undecodable bytes as lone surrogates."""
    return raw.decode("utf-8", "surrogateescape")
