from __future__ import annotations

import datetime as dt
import json

import pytest

from pyqueue.errors import ArgumentError, PayloadError
from pyqueue.payload import check_args, decode, dumps, epoch_seconds, new_jid, ruby_float

ACCEPTED = [
    0.0011285007931292057,
    1e-07,
    1.7976931348623157e308,
    -0.0,
    None,
    {"a": [1, {"b": None}]},
    "naïve café 🎉",
    "line\nbreak\ttab",
    "",
    [],
]


@pytest.mark.parametrize(
    ("value", "spelling"),
    [
        (1e20, "1.0e+20"),
        (1e-05, "1.0e-05"),
        (1e-07, "1.0e-07"),
        (1.5e-07, "1.5e-07"),
        (1e16, "1.0e+16"),
        (1e15, "1.0e+15"),
        (1234567890123456.0, "1.234567890123456e+15"),
        (1000000000000000.5, "1000000000000000.5"),
        (-9007199254740992.0, "-9.007199254740992e+15"),
        (123456789012345.0, "123456789012345.0"),
        (0.0001, "0.0001"),
        (-0.0, "-0.0"),
        (3.0, "3.0"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
    ],
)
def test_ruby_float_spelling(value: float, spelling: str) -> None:
    assert ruby_float(value) == spelling
    assert dumps([value]) == f"[{spelling}]"


def test_dumps_compact_raw_utf8() -> None:
    text = dumps({"s": "naïve 🎉 \u2028", "n": None, "l": [1, 2]})
    assert text == '{"s":"naïve 🎉 \u2028","n":null,"l":[1,2]}'


def test_dumps_string_with_exponent_text_unchanged() -> None:
    assert dumps(["e+1", "x e-2", 1.5]) == '["e+1","x e-2",1.5]'


def test_big_integers_round_trip_exactly() -> None:
    values = [2**63 - 1, 12345678901234567890, 2**100, -(2**100)]
    text = dumps(values)
    big = "1267650600228229401496703205376"
    assert text == f"[9223372036854775807,12345678901234567890,{big},-{big}]"
    assert json.loads(text) == values
    assert all(isinstance(v, int) for v in json.loads(text))


def test_accepted_args_round_trip() -> None:
    check_args(ACCEPTED)
    decoded = json.loads(dumps(ACCEPTED))
    assert decoded == ACCEPTED
    for original, back in zip(ACCEPTED[:4], decoded[:4], strict=True):
        assert repr(original) == repr(back)
    assert "NaN" not in dumps(ACCEPTED)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        (b"\x8b\x08\x00", "bytes"),
        (dt.datetime(2024, 5, 6), "datetime"),
        ({1, 2}, "set"),
        ({1: "int key"}, "key 1"),
        ((1, 2), "tuple"),
        (object(), "object"),
    ],
)
def test_rejected_args_name_position_and_type(value: object, words: str) -> None:
    with pytest.raises(ArgumentError) as info:
        check_args(["ok", value])
    message = str(info.value)
    assert "args[1]" in message
    assert words in message
    assert isinstance(info.value, TypeError)


def test_nested_position_in_error() -> None:
    with pytest.raises(ArgumentError, match=r"args\[0\]\['a'\]\[1\]"):
        check_args([{"a": [1, b"x"]}])


def test_args_must_be_list() -> None:
    with pytest.raises(ArgumentError, match="must be a list"):
        check_args("not a list")


def test_jid_format() -> None:
    jid = new_jid()
    assert len(jid) == 24
    assert all(c in "0123456789abcdef" for c in jid)


def test_epoch_seconds_reads_every_version() -> None:
    assert epoch_seconds(1714986000.5) == 1714986000.5
    assert epoch_seconds(1714986000500) == 1714986000.5
    assert epoch_seconds("1714986000.5") == 1714986000.5
    assert epoch_seconds(None) is None
    assert epoch_seconds(True) is None
    assert epoch_seconds("yesterday") is None


def test_decode_rejects_non_objects() -> None:
    with pytest.raises(PayloadError, match="not valid JSON"):
        decode("{not json")
    with pytest.raises(PayloadError, match="JSON object"):
        decode("[1]")
    assert decode('{"class":"X"}') == {"class": "X"}
