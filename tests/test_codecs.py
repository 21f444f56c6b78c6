from __future__ import annotations

import math

import pytest

from goka_ray import CodecError, codecs
from goka_ray.codecs import as_codec

ROUND_TRIPS = [
    (codecs.String(), ["", "hello", "grüße ☃", "x" * 10_000]),
    (codecs.Int(), [0, 1, -1, 2**63 - 1, -(2**63)]),
    (codecs.Float(), [0.0, -1.5, 1e300, math.inf]),
    (codecs.Bytes(), [b"", b"\x00\xff", bytes(range(256))]),
    (codecs.Json(), [None, 1, "s", [1, 2], {"a": {"b": [True, None, 1.5]}}]),
    (codecs.Pickle(), [{"set": {1, 2}}, (1, "a"), complex(1, 2)]),
]


@pytest.mark.parametrize(("codec", "values"), ROUND_TRIPS, ids=lambda c: type(c).__name__)
def test_values_survive_a_round_trip(codec, values):
    for value in values:
        assert codec.decode(codec.encode(value)) == value


def test_pickle_carries_a_lambda():
    square = codecs.Pickle().decode(codecs.Pickle().encode(lambda x: x * x))
    assert square(7) == 49


def test_int_and_float_match_javas_long_and_double_serializers():
    assert codecs.Int().encode(1) == b"\x00\x00\x00\x00\x00\x00\x00\x01"
    assert codecs.Int().encode(-2) == b"\xff\xff\xff\xff\xff\xff\xff\xfe"
    assert codecs.Float().encode(1.0) == b"\x3f\xf0\x00\x00\x00\x00\x00\x00"


@pytest.mark.parametrize(
    ("codec", "value"),
    [
        (codecs.String(), 5),
        (codecs.Int(), "5"),
        (codecs.Int(), True),
        (codecs.Int(), 2**64),
        (codecs.Float(), "1.0"),
        (codecs.Bytes(), "text"),
        (codecs.Json(), {1, 2}),
    ],
)
def test_encoding_a_wrong_type_says_what_was_expected(codec, value):
    with pytest.raises(CodecError, match="expected"):
        codec.encode(value)


def test_decode_error_names_the_codec_and_shows_a_prefix_of_the_bytes():
    with pytest.raises(CodecError) as info:
        codecs.Int().decode(b"abc")
    assert "Int codec cannot decode 3 bytes b'abc'" in str(info.value)


def test_decode_error_truncates_long_data():
    with pytest.raises(CodecError) as info:
        codecs.Json().decode(b"{" * 100)
    message = str(info.value)
    assert "Json codec" in message and "(+68 more bytes)" in message and "{" * 33 not in message


def test_string_rejects_invalid_utf8():
    with pytest.raises(CodecError, match="String codec"):
        codecs.String().decode(b"\xff\xfe")


def test_as_codec_instantiates_classes_and_rejects_non_codecs():
    assert isinstance(as_codec(codecs.Json, "here"), codecs.Json)
    with pytest.raises(CodecError, match="here: 'json' is not a codec"):
        as_codec("json", "here")
