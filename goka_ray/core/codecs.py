"""Codecs turn values into bytes for Kafka and back.

Any object with ``encode(value) -> bytes`` and ``decode(data: bytes) -> value`` is a codec.
The built-in ones are compatible with Kafka's standard serializers where one exists
(``Int`` = Java ``LongSerializer``, ``Float`` = ``DoubleSerializer``, ``String`` = UTF-8).
"""

from __future__ import annotations

import json
import pickle
import re
import struct
from typing import Any, Protocol, runtime_checkable

import cloudpickle

from goka_ray.errors import CodecError

__all__ = [
    "Bytes",
    "Codec",
    "Float",
    "GokaInt64",
    "Int",
    "Json",
    "Pickle",
    "String",
    "as_codec",
    "decode_error",
    "encode_error",
]

_PREFIX_BYTES = 32


def decode_error(codec: object, data: bytes, reason: object) -> CodecError:
    """The CodecError for ``data`` that ``codec`` cannot decode: names the codec, shows the
    first 32 bytes and ``reason``, and says what to check. For custom codecs too."""
    shown = bytes(data[:_PREFIX_BYTES])
    more = f" (+{len(data) - _PREFIX_BYTES} more bytes)" if len(data) > _PREFIX_BYTES else ""
    return CodecError(
        f"{type(codec).__name__} codec cannot decode {len(data)} bytes {shown!r}{more}: {reason}. "
        f"Check that producers of this topic use the same codec, or choose another codec "
        f"(or an on_decode_error policy) for this edge."
    )


def encode_error(codec: object, value: object, expected: str) -> CodecError:
    """The CodecError for a ``value`` that ``codec`` cannot encode (``expected``: what it
    takes). For custom codecs too."""
    return CodecError(
        f"{type(codec).__name__} codec cannot encode {type(value).__name__} {value!r:.80}: "
        f"expected {expected}."
    )


@runtime_checkable
class Codec(Protocol):
    """Encodes values to bytes and decodes them back."""

    def encode(self, value: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


class String:
    """UTF-8 text."""

    def encode(self, value: str) -> bytes:
        if not isinstance(value, str):
            raise encode_error(self, value, "str")
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates have no UTF-8 form
            raise encode_error(self, value, f"text that UTF-8 can encode ({exc})") from exc

    def decode(self, data: bytes) -> str:
        try:
            return bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise decode_error(self, data, exc) from exc


_LONG = struct.Struct(">q")
_DOUBLE = struct.Struct(">d")


class Int:
    """64-bit signed integer, 8 bytes big-endian (Kafka's LongSerializer)."""

    def encode(self, value: int) -> bytes:
        if type(value) is not int and (not isinstance(value, int) or isinstance(value, bool)):
            raise encode_error(self, value, "int")
        try:
            return _LONG.pack(value)
        except struct.error as exc:
            raise encode_error(self, value, "an int in the signed 64-bit range") from exc

    def decode(self, data: bytes) -> int:
        if len(data) != 8:
            raise decode_error(self, data, "expected exactly 8 bytes")
        value: int = _LONG.unpack(data)[0]
        return value


_DECIMAL = re.compile(rb"[+-]?[0-9]+")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class GokaInt64:
    """64-bit signed integer as decimal text: Goka's ``codec.Int64`` (``strconv.FormatInt``).

    Decoding accepts exactly what Go's ``strconv.ParseInt(s, 10, 64)`` accepts: an optional
    sign and ASCII digits, no spaces or underscores, within the signed 64-bit range.
    """

    def encode(self, value: int) -> bytes:
        if type(value) is not int and (not isinstance(value, int) or isinstance(value, bool)):
            raise encode_error(self, value, "int")
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise encode_error(self, value, "an int in the signed 64-bit range")
        return str(value).encode("ascii")

    def decode(self, data: bytes) -> int:
        if not _DECIMAL.fullmatch(data):
            raise decode_error(self, data, "expected decimal digits with an optional sign")
        value = int(data)
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise decode_error(self, data, "out of the signed 64-bit range")
        return value


class Float:
    """64-bit IEEE 754 float, 8 bytes big-endian (Kafka's DoubleSerializer)."""

    def encode(self, value: float) -> bytes:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise encode_error(self, value, "float")
        try:
            return _DOUBLE.pack(float(value))
        except OverflowError as exc:  # an int beyond the double range
            raise encode_error(self, value, "a float in the 64-bit IEEE 754 range") from exc

    def decode(self, data: bytes) -> float:
        if len(data) != 8:
            raise decode_error(self, data, "expected exactly 8 bytes")
        value: float = _DOUBLE.unpack(data)[0]
        return value


class Bytes:
    """Raw bytes, passed through unchanged."""

    def encode(self, value: bytes) -> bytes:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise encode_error(self, value, "bytes")
        return bytes(value)

    def decode(self, data: bytes) -> bytes:
        return data if type(data) is bytes else bytes(data)  # bytes are immutable: no copy


class Json:
    """JSON text in UTF-8 (dicts, lists, str, numbers, bool, None)."""

    def encode(self, value: Any) -> bytes:
        try:
            return json.dumps(value, separators=(",", ":")).encode("utf-8")
        except (TypeError, ValueError, RecursionError) as exc:
            raise encode_error(self, value, f"a JSON-serialisable value ({exc})") from exc

    def decode(self, data: bytes) -> Any:
        try:
            return json.loads(data)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise decode_error(self, data, exc) from exc


class Pickle:
    """Any Python object, via cloudpickle. Only for topics that Python alone reads."""

    def encode(self, value: Any) -> bytes:
        try:
            data: bytes = cloudpickle.dumps(value)
        except Exception as exc:
            raise encode_error(self, value, f"a picklable object ({exc})") from exc
        return data

    def decode(self, data: bytes) -> Any:
        try:
            return pickle.loads(data)
        except Exception as exc:
            raise decode_error(self, data, exc) from exc


def as_codec(codec: Any, where: str) -> Codec:
    """Accept a codec instance or a codec class (instantiated); reject anything else."""
    if isinstance(codec, type):
        if not (
            callable(getattr(codec, "encode", None)) and callable(getattr(codec, "decode", None))
        ):
            raise CodecError(
                f"{where}: class {codec.__name__} is not a codec (it lacks encode/decode); pass "
                f"e.g. goka_ray.codecs.String() or any object with encode(value) -> bytes and "
                f"decode(bytes) -> value"
            )
        try:
            codec = codec()
        except TypeError as exc:
            raise CodecError(
                f"{where}: cannot instantiate codec class {codec.__name__}: {exc}"
            ) from exc
    if not isinstance(codec, Codec):
        raise CodecError(
            f"{where}: {codec!r} is not a codec; pass e.g. goka_ray.codecs.String() or any object "
            f"with encode(value) -> bytes and decode(bytes) -> value"
        )
    return codec
