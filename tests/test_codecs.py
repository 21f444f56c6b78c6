"""Codecs: round trips, Java-compatible wire formats, and errors that say what went wrong."""

from __future__ import annotations

import enum
import math
import struct
from typing import Any

import numpy
import pytest

from goka_ray import Codec, CodecError, codecs
from goka_ray.core.codecs import as_codec

ROUND_TRIPS: list[tuple[Codec, list[Any]]] = [
    (codecs.String(), ["", "hello", "grüße ☃ 日本 🚀", "line\nbreak\x00nul", "x" * 100_000]),
    (codecs.Int(), [0, 1, -1, 42, -42, 2**31, -(2**31) - 1, 2**63 - 1, -(2**63)]),
    (codecs.Float(), [0.0, -0.0, 1.5, -1.5, 1e-300, 1e300, 5e-324, math.inf, -math.inf]),
    (codecs.Bytes(), [b"", b"\x00", b"\x00\xff", bytes(range(256))]),
    (
        codecs.Json(),
        [
            None,
            0,
            -7,
            1.25,
            "",
            "ünïcødé ☃",
            True,
            [],
            {},
            [1, [2, [3, [4]]]],
            {"a": {"b": [True, None, 1.5, {"c": "d"}]}, "e": []},
        ],
    ),
    (codecs.Pickle(), [None, {"set": {1, 2}}, (1, "a"), complex(1, 2), b"raw", [1.5, "x"]]),
]


@pytest.mark.parametrize(
    ("codec", "values"), ROUND_TRIPS, ids=[type(c).__name__ for c, _ in ROUND_TRIPS]
)
def test_values_survive_a_round_trip(codec: Codec, values: list[Any]) -> None:
    for value in values:
        decoded = codec.decode(codec.encode(value))
        assert decoded == value and type(decoded) is type(value)


def test_float_round_trip_keeps_nan_and_the_sign_of_zero() -> None:
    f = codecs.Float()
    assert math.isnan(f.decode(f.encode(math.nan)))
    assert math.copysign(1.0, f.decode(f.encode(-0.0))) == -1.0


def test_float_accepts_ints_and_returns_a_float() -> None:
    decoded = codecs.Float().decode(codecs.Float().encode(3))
    assert decoded == 3.0 and isinstance(decoded, float)


def test_pickle_carries_a_lambda_with_its_closure() -> None:
    factor = 3
    codec = codecs.Pickle()
    times = codec.decode(codec.encode(lambda x: x * factor))
    assert times(7) == 21


def test_pickle_carries_instances_of_locally_defined_classes() -> None:
    class Point:
        def __init__(self, x: int, y: int) -> None:
            self.x, self.y = x, y

    codec = codecs.Pickle()
    p = codec.decode(codec.encode(Point(1, 2)))
    assert (type(p).__name__, p.x, p.y) == ("Point", 1, 2)


def test_bytes_encodes_bytearray_and_memoryview_as_bytes() -> None:
    assert codecs.Bytes().encode(bytearray(b"ab")) == b"ab"  # type: ignore[arg-type]
    assert codecs.Bytes().encode(memoryview(b"cd")) == b"cd"  # type: ignore[arg-type]
    assert type(codecs.Bytes().encode(bytearray(b"ab"))) is bytes  # type: ignore[arg-type]


def test_string_is_utf8_on_the_wire() -> None:
    assert codecs.String().encode("grüße") == "grüße".encode()
    assert codecs.String().decode(b"\xe2\x98\x83") == "☃"


def test_json_is_compact_utf8_text() -> None:
    assert codecs.Json().encode({"a": [1, 2], "b": "ü"}) == b'{"a":[1,2],"b":"\\u00fc"}'
    assert codecs.Json().decode('{"b": "ü"}'.encode()) == {"b": "ü"}


# -- Kafka/Java compatibility --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (0, b"\x00\x00\x00\x00\x00\x00\x00\x00"),
        (1, b"\x00\x00\x00\x00\x00\x00\x00\x01"),
        (-1, b"\xff\xff\xff\xff\xff\xff\xff\xff"),
        (-2, b"\xff\xff\xff\xff\xff\xff\xff\xfe"),
        (256, b"\x00\x00\x00\x00\x00\x00\x01\x00"),
        (2**63 - 1, b"\x7f\xff\xff\xff\xff\xff\xff\xff"),
        (-(2**63), b"\x80\x00\x00\x00\x00\x00\x00\x00"),
    ],
)
def test_int_wire_format_is_javas_long_serializer(value: int, wire: bytes) -> None:
    assert codecs.Int().encode(value) == wire
    assert codecs.Int().decode(wire) == value


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (0.0, b"\x00\x00\x00\x00\x00\x00\x00\x00"),
        (1.0, b"\x3f\xf0\x00\x00\x00\x00\x00\x00"),
        (-2.0, b"\xc0\x00\x00\x00\x00\x00\x00\x00"),
        (0.5, b"\x3f\xe0\x00\x00\x00\x00\x00\x00"),
        (math.inf, b"\x7f\xf0\x00\x00\x00\x00\x00\x00"),
    ],
)
def test_float_wire_format_is_javas_double_serializer(value: float, wire: bytes) -> None:
    assert codecs.Float().encode(value) == wire
    assert codecs.Float().decode(wire) == value


def test_float_wire_format_is_ieee754_big_endian_for_any_value() -> None:
    for value in (3.141592653589793, -1e-10, 123456.789):
        assert codecs.Float().encode(value) == struct.pack(">d", value)


# -- encode errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "value", "expected"),
    [
        (codecs.String(), 5, "expected str"),
        (codecs.String(), b"bytes", "expected str"),
        (codecs.String(), None, "expected str"),
        (codecs.String(), "\ud800", "expected text that UTF-8 can encode"),
        (codecs.Int(), "5", "expected int"),
        (codecs.Int(), 5.0, "expected int"),
        (codecs.Int(), True, "expected int"),
        (codecs.Int(), 2**63, "signed 64-bit range"),
        (codecs.Int(), -(2**63) - 1, "signed 64-bit range"),
        (codecs.Float(), "1.0", "expected float"),
        (codecs.Float(), False, "expected float"),
        (codecs.Float(), 10**400, "64-bit IEEE 754 range"),
        (codecs.Bytes(), "text", "expected bytes"),
        (codecs.Bytes(), [1, 2], "expected bytes"),
        (codecs.Json(), {1, 2}, "JSON-serialisable"),
        (codecs.Json(), b"bytes", "JSON-serialisable"),
        (codecs.Json(), object(), "JSON-serialisable"),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, str) else v[:12],
)
def test_encoding_a_wrong_value_raises_codec_error_saying_what_was_expected(
    codec: Codec, value: object, expected: str
) -> None:
    with pytest.raises(CodecError, match=expected) as info:
        codec.encode(value)
    assert str(info.value).startswith(f"{type(codec).__name__} codec cannot encode")


class Level(enum.IntEnum):
    HIGH = 7


@pytest.mark.parametrize("codec", [codecs.Int(), codecs.GokaInt64()], ids=["Int", "GokaInt64"])
def test_int_codecs_encode_an_int_subclass_as_its_number_and_refuse_bools_and_numpy_ints(
    codec: Codec,
) -> None:
    assert codec.encode(Level.HIGH) == codec.encode(7)
    decoded = codec.decode(codec.encode(Level.HIGH))
    assert decoded == 7 and type(decoded) is int
    for wrong in (True, False, numpy.int64(7), numpy.uint8(7)):
        with pytest.raises(CodecError, match="expected int"):
            codec.encode(wrong)


def test_json_encode_error_for_a_circular_structure() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(CodecError, match="Json codec cannot encode list"):
        codecs.Json().encode(loop)


def test_pickle_encode_error_for_an_unpicklable_object() -> None:
    import threading

    with pytest.raises(CodecError, match=r"Pickle codec cannot encode .*picklable"):
        codecs.Pickle().encode(threading.Lock())


def test_encode_error_shortens_a_long_value() -> None:
    with pytest.raises(CodecError) as info:
        codecs.Int().encode("y" * 1000)  # type: ignore[arg-type]
    assert "y" * 79 in str(info.value) and "y" * 81 not in str(info.value)


# -- decode errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "data"),
    [
        (codecs.String(), b"\xff\xfe"),
        (codecs.Int(), b"abc"),
        (codecs.Int(), b""),
        (codecs.Int(), b"123456789"),
        (codecs.Float(), b"\x00" * 4),
        (codecs.Json(), b"{not json"),
        (codecs.Json(), b""),
        (codecs.Json(), b"\xff"),
        (codecs.Pickle(), b"not a pickle"),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, bytes) else repr(v)[:12],
)
def test_decode_error_names_the_codec_and_shows_the_bytes(codec: Codec, data: bytes) -> None:
    with pytest.raises(CodecError) as info:
        codec.decode(data)
    message = str(info.value)
    assert message.startswith(f"{type(codec).__name__} codec cannot decode {len(data)} bytes")
    assert repr(data) in message
    assert "more bytes" not in message


def test_decode_error_says_how_to_fix_it() -> None:
    with pytest.raises(CodecError, match=r"same codec.*on_decode_error"):
        codecs.Int().decode(b"abc")


def test_decode_error_keeps_the_underlying_error_as_cause() -> None:
    with pytest.raises(CodecError) as info:
        codecs.String().decode(b"\xff")
    assert isinstance(info.value.__cause__, UnicodeDecodeError)


def test_decode_error_truncates_long_data_to_a_32_byte_prefix() -> None:
    data = b"{" + b"x" * 99
    with pytest.raises(CodecError) as info:
        codecs.Json().decode(data)
    message = str(info.value)
    assert "cannot decode 100 bytes" in message
    assert repr(data[:32]) in message and repr(data[:33]) not in message
    assert "(+68 more bytes)" in message


def test_json_decode_of_absurdly_deep_nesting_is_a_codec_error() -> None:
    with pytest.raises(CodecError, match="Json codec cannot decode 200000 bytes"):
        codecs.Json().decode(b"[" * 200_000)


def test_bytes_decodes_anything() -> None:
    assert codecs.Bytes().decode(b"\xff\x00") == b"\xff\x00"


class Tagged(bytes):
    """A bytes subclass, as a user's own Kafka client might hand over."""


def test_bytes_decodes_any_buffer_to_plain_immutable_bytes() -> None:
    buffer = bytearray(b"ab")
    decoded = codecs.Bytes().decode(buffer)  # type: ignore[arg-type]
    buffer[0] = ord("z")  # the caller reuses its buffer: the decoded value must not change
    assert decoded == b"ab" and type(decoded) is bytes
    window = memoryview(b"xcdx")[1:3]
    assert codecs.Bytes().decode(window) == b"cd"  # type: ignore[arg-type]
    assert type(codecs.Bytes().decode(window)) is bytes  # type: ignore[arg-type]
    assert type(codecs.Bytes().decode(Tagged(b"t"))) is bytes
    assert codecs.Bytes().decode(Tagged(b"t")) == b"t"


# -- as_codec ------------------------------------------------------------------------------


def test_as_codec_returns_a_codec_instance_unchanged() -> None:
    codec = codecs.Json()
    assert as_codec(codec, "here") is codec


@pytest.mark.parametrize(
    "cls", [codecs.String, codecs.Int, codecs.Float, codecs.Bytes, codecs.Json, codecs.Pickle]
)
def test_as_codec_instantiates_a_codec_class(cls: type) -> None:
    assert isinstance(as_codec(cls, "here"), cls)


def test_as_codec_accepts_any_object_with_encode_and_decode() -> None:
    class Upper:
        def encode(self, value: str) -> bytes:
            return value.upper().encode()

        def decode(self, data: bytes) -> str:
            return data.decode().lower()

    codec = as_codec(Upper, "here")
    assert codec.decode(codec.encode("abc")) == "abc"
    assert isinstance(codec, Codec)


@pytest.mark.parametrize("thing", ["json", None, 42, object(), b"bytes"])
def test_as_codec_rejects_non_codecs_naming_where_and_what(thing: object) -> None:
    with pytest.raises(CodecError, match=r"^here: .* is not a codec; pass e\.g\."):
        as_codec(thing, "here")


@pytest.mark.parametrize("cls", [int, str, bytes, dict])
def test_as_codec_rejects_a_class_that_is_no_codec_by_name(cls: type) -> None:
    with pytest.raises(CodecError, match=rf"here: class {cls.__name__} is not a codec"):
        as_codec(cls, "here")


def test_as_codec_explains_a_codec_class_that_needs_arguments() -> None:
    class Prefixed:
        def __init__(self, prefix: bytes) -> None:
            self.prefix = prefix

        def encode(self, value: bytes) -> bytes:
            return self.prefix + value

        def decode(self, data: bytes) -> bytes:
            return data[len(self.prefix) :]

    with pytest.raises(CodecError, match="here: cannot instantiate codec class Prefixed"):
        as_codec(Prefixed, "here")
