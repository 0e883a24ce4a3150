"""Fidelity: whatever the original (stdlib json) round-trips, round-trips here with the same values and types.

The reference for every value x is `json.loads(json.dumps(x))`: a save of [x] then a load must give exactly
that, type for type (bool stays bool, int stays int, float stays float, nan stays nan, -0.0 stays -0.0).
Corner cases are taken from CPython's Lib/test/test_json (test_float, test_unicode, test_recursion, ...).
"""

from __future__ import annotations

import collections
import enum
import json
import math
import random
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
from _helpers import (
    any_text,
    assert_same,
    floats,
    folder_listing,
    ints,
    json_values,
    nested_dicts,
    nested_lists,
    reference,
)
from conversation_codec import CodecError, ConversationCodec, DecodeError, EncodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def round_trip(path: Path, messages: list[Any]) -> list[Any]:
    ConversationCodec(path).save(messages)
    return ConversationCodec(path).load()


def check(path: Path, x: Any) -> None:
    """Saving [x] and loading gives the stdlib's round trip of x, types included."""
    assert_same(round_trip(path, [x]), [reference(x)])


# ---------------------------------------------------------------------------------------------- hypothesis

HYPOTHESIS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@HYPOTHESIS
@given(x=json_values)
def test_round_trip_matches_stdlib(conv_path: Path, x: Any) -> None:
    check(conv_path, x)


@HYPOTHESIS
@given(messages=st.lists(json_values, max_size=10))
def test_many_messages_round_trip(conv_path: Path, messages: list[Any]) -> None:
    assert_same(round_trip(conv_path, messages), [reference(m) for m in messages])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(s=any_text)
def test_strings_round_trip(conv_path: Path, s: str) -> None:
    check(conv_path, {s: s})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(f=st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True))
def test_floats_round_trip(conv_path: Path, f: float) -> None:
    check(conv_path, [f, {"v": f}])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=st.lists(st.one_of(st.none(), st.booleans(), ints, floats, any_text), max_size=6))
def test_non_str_keys_match_stdlib(conv_path: Path, keys: list[Any]) -> None:
    check(conv_path, {k: i for i, k in enumerate(keys)})


# ----------------------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    "f",
    [
        1e16,
        1e-7,
        5e-324,
        -5e-324,
        1.7976931348623157e308,
        -1.7976931348623157e308,
        2.2250738585072014e-308,  # smallest normal
        2.225073858507201e-308,  # largest subnormal
        0.1 + 0.2,
        1.0,
        -1.0,
        0.0,
        -0.0,
        1e15,
        123456789012345680.0,
        1e22,
        1e23,
        9007199254740993.0,
        math.pi,
        float("nan"),
        float("inf"),
        float("-inf"),
    ],
    ids=repr,
)
def test_float_corners(conv_path: Path, f: float) -> None:
    check(conv_path, f)
    check(conv_path, [f])


def test_floats_stay_floats_and_ints_stay_ints(conv_path: Path) -> None:
    loaded = round_trip(conv_path, [[1, 1.0, -0, -0.0, True, 1e16, 10**16]])[0]
    assert [type(v) for v in loaded] == [int, float, int, float, bool, float, int]
    assert math.copysign(1.0, loaded[3]) == -1.0


@pytest.mark.parametrize(
    "n",
    [
        0,
        2**31,
        2**53 + 1,
        2**63 - 1,
        2**63,
        2**64 - 1,
        2**64,
        -(2**63),
        -(2**63) - 1,
        -(2**64),
        10**100,
        -(10**100),
        3**2000,
        -(7**3000),
    ],
    ids=lambda n: str(n) if abs(n) <= 2**64 else f"{'-' if n < 0 else ''}{len(str(abs(n)))}-digits",
)
def test_big_ints(conv_path: Path, n: int) -> None:
    check(conv_path, n)
    check(conv_path, {"n": [n]})


def test_int_at_the_str_digits_limit(conv_path: Path) -> None:
    limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 4300
    if limit == 0:
        pytest.skip("the interpreter runs with no int digits limit")
    n = -int("9" * limit)
    check(conv_path, n)


@pytest.mark.skipif(not hasattr(sys, "get_int_max_str_digits"), reason="no int digits limit before 3.11")
def test_int_over_the_str_digits_limit_is_refused_like_the_stdlib(conv_path: Path) -> None:
    limit = sys.get_int_max_str_digits()
    if limit == 0:
        pytest.skip("the interpreter runs with no int digits limit")
    n = 10 ** (limit + 10)
    with pytest.raises(ValueError):
        json.dumps(n)  # the reference refuses it ...
    codec = ConversationCodec(conv_path)
    codec.save([{"ok": 1}])
    before = conv_path.read_bytes()
    with pytest.raises(ValueError) as info:  # ... and so must we, with nothing written
        codec.save([{"ok": 1}, {"n": [n]}])
    assert isinstance(info.value, EncodeError), type(info.value)
    assert conv_path.read_bytes() == before
    assert folder_listing(conv_path) == [conv_path.name]


@pytest.mark.skipif(not hasattr(sys, "get_int_max_str_digits"), reason="no int digits limit before 3.11")
def test_loading_int_over_the_str_digits_limit_is_refused_like_the_stdlib(conv_path: Path) -> None:
    limit = sys.get_int_max_str_digits()
    if limit == 0:
        pytest.skip("the interpreter runs with no int digits limit")
    text = "1" * (limit + 1)
    with pytest.raises(ValueError):
        json.loads(text)
    conv_path.write_text(f'{{"ok": 1}}\n[{text}]\n')
    with pytest.raises(DecodeError) as info:
        ConversationCodec(conv_path).load()
    assert info.value.lineno == 2


@pytest.mark.skipif(not hasattr(sys, "set_int_max_str_digits"), reason="no int digits limit before 3.11")
def test_int_digits_limit_lifted_round_trips_like_the_stdlib(conv_path: Path) -> None:
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        n = 7**20000  # ~16900 digits
        check(conv_path, [n, -n])
    finally:
        sys.set_int_max_str_digits(old)


# ----------------------------------------------------------------------------------------- strings

CONTROL_CHARS = "".join(chr(c) for c in range(32))


@pytest.mark.parametrize(
    "s",
    [
        "",
        CONTROL_CHARS,
        "a\x00b",
        "\x7f",
        "\x85",
        "\u2028\u2029",
        '"\\/\b\f\n\r\t',
        "\ud800",
        "\udfff",
        "a\ud800b\udc00c",
        "\udc00\ud800",  # a low then a high surrogate: two lone surrogates, not a pair
        "\ud83d\ude00",  # a pair written as two code points: the stdlib reads it back as one (U+1F600)
        "😀🎉 👩‍👩‍👧‍👦 🇫🇷",
        "中文字符 日本語 한국어",
        "\ufeff",
        "\uffff\U0010ffff",
        "é" * 3 + "ß" + "\u0301",
        "</script>",
        "\\u0000",
    ],
    ids=lambda s: repr(s)[:30],
)
def test_string_corners(conv_path: Path, s: str) -> None:
    check(conv_path, s)
    check(conv_path, {s: [s]})


def test_every_control_character_alone(conv_path: Path) -> None:
    check(conv_path, [chr(c) for c in range(32)])
    check(conv_path, {chr(c): c for c in range(32)})


def test_surrogate_pair_written_as_two_code_points_matches_stdlib(conv_path: Path) -> None:
    # The stdlib escapes each surrogate as \udXXX, and its decoder joins a \ud83d\ude00 pair into U+1F600.
    assert reference("\ud83d\ude00") == "\U0001f600"
    check(conv_path, "\ud83d\ude00")


def test_very_long_strings(conv_path: Path) -> None:
    plain = "lorem ipsum dolor sit amet " * 400_000  # ~10 MB
    escaped = ('"\\\n\t\x01é中😀' * 100_000) + "\ud800"
    check(conv_path, [plain, escaped])


def test_long_string_of_every_bmp_and_astral_code_point(conv_path: Path) -> None:
    everything = "".join(chr(c) for c in range(0x110000))
    check(conv_path, everything)


# ----------------------------------------------------------------------------------------- keys


def test_non_str_keys_converted_as_the_stdlib_does(conv_path: Path) -> None:
    # {1: ..., True: ...} would be one key in Python (1 == True): the bool goes in its own dict.
    x = [{1: "a", 2.5: "b", None: "d"}, {True: "c"}, {False: "e"}, {-3: "f", 1e16: "g", -0.0: "h"}]
    loaded = round_trip(conv_path, x)
    assert_same(loaded, reference(x))
    assert list(loaded[0]) == ["1", "2.5", "null"]
    assert list(loaded[1]) == ["true"]


def test_float_keys_nan_and_infinity(conv_path: Path) -> None:
    x = {float("nan"): 1, float("inf"): 2, float("-inf"): 3}
    loaded = round_trip(conv_path, [x])
    assert_same(loaded, [reference(x)])
    assert list(loaded[0]) == ["NaN", "Infinity", "-Infinity"]


def test_big_int_keys(conv_path: Path) -> None:
    check(conv_path, {10**100: 1, -(2**64): 2, 2**63: 3})


def test_duplicate_keys_after_conversion_load_as_the_stdlib_does(conv_path: Path) -> None:
    for x in ({1: "a", "1": "b"}, {"1": "b", 1: "a"}, {None: 1, "null": 2, "x": 3}, {1.5: 1, "x": 2, "1.5": 3}):
        check(conv_path, x)


class Color(enum.IntEnum):
    RED = 1
    GREEN = 2


class Ratio(float):
    def __repr__(self) -> str:
        return "not a float"

    __str__ = __repr__


class Count(int):
    def __repr__(self) -> str:
        return "not an int"

    __str__ = __repr__


class Name(str):
    def __str__(self) -> str:
        return "not this"

    def __repr__(self) -> str:
        return "nor this"


class MyList(list):  # type: ignore[type-arg]
    pass


class MyDict(dict):  # type: ignore[type-arg]
    pass


Point = collections.namedtuple("Point", ["x", "y"])


class SortedItems(dict):  # type: ignore[type-arg]
    """The stdlib encodes a dict subclass through its items(): so must we."""

    def items(self) -> Any:
        return sorted(super().items())


class HiddenKeys(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        return [(k, v) for k, v in super().items() if not k.startswith("_")]


class Role(str, enum.Enum):
    USER = "user"


class Weight(float, enum.Enum):
    HALF = 0.5


def _moved() -> OrderedDict[str, int]:
    od = OrderedDict(a=1, b=2, c=3)
    od.move_to_end("a")  # the linked order differs from the underlying dict's insertion order
    return od


@pytest.mark.parametrize(
    "x",
    [
        Color.GREEN,
        [Color.RED, {"c": Color.GREEN}],
        {Color.RED: "red"},
        Ratio(2.5),
        {Ratio(0.5): Ratio(-0.0)},
        Count(7),
        {Count(7): Count(-8)},
        Name("hello"),
        {Name("k"): Name("v")},
        OrderedDict([("b", 1), ("a", 2)]),
        MyDict(z=1, a=MyList([1, 2])),
        MyList([1, MyList([2])]),
        (1, (2, 3), []),
        Point(1, 2),
        {"p": Point(x=[Point(0, 0)], y=(None,))},
        _moved(),
        SortedItems(b=1, a=2),
        HiddenKeys(a=1, _secret=2),
        {Role.USER: Role.USER},
        [Weight.HALF, {Weight.HALF: 1}],
    ],
    ids=lambda x: f"{type(x).__name__}-{x!r}"[:40],
)
def test_subclasses_and_tuples_as_the_stdlib_writes_them(conv_path: Path, x: Any) -> None:
    check(conv_path, x)


def test_many_distinct_short_strings(conv_path: Path) -> None:
    # The loader shares short strings (keys, roles) through a cache: distinct strings must stay distinct.
    rng = random.Random(7)
    alphabet = 'ab\u00e9\u4e2d\U0001f600\\"\n'
    words = ["".join(rng.choices(alphabet, k=rng.randrange(0, 9))) for _ in range(60_000)]
    messages = [{w: words[-i - 1], "role": w} for i, w in enumerate(words)]
    check(conv_path, messages)


def test_key_order_is_kept(conv_path: Path) -> None:
    x = {k: i for i, k in enumerate(["zeta", "alpha", "mu", "", "Alpha", "1", "0"])}
    assert list(round_trip(conv_path, [x])[0]) == list(x)


# ----------------------------------------------------------------------------------------- nesting


def test_500_nested_lists_round_trip(conv_path: Path) -> None:
    x = nested_lists(500)
    check(conv_path, x)  # the stdlib itself round-trips this


def test_1000_nested_lists_and_dicts_round_trip(conv_path: Path) -> None:
    # Deeper than the stdlib's recursion limit allows, within ours (1024): compare without the stdlib.
    lists, dicts = nested_lists(1000), nested_dicts(1000)
    assert_same(round_trip(conv_path, [lists, dicts]), [lists, dicts])


def test_what_save_accepts_load_accepts_at_the_depth_limit(conv_path: Path) -> None:
    # Around the limit, every file that save() writes must load back: the two sides agree on the limit.
    saved = 0
    for depth in range(1015, 1035):
        x = nested_lists(depth)
        try:
            ConversationCodec(conv_path).save([x])
        except EncodeError:
            continue
        saved += 1
        assert_same(ConversationCodec(conv_path).load(), [x])
    assert 0 < saved < 20, "expected the depth limit to fall inside 1015..1034"


@pytest.mark.parametrize("make", [nested_lists, nested_dicts])
def test_depth_limit_is_1024_levels_on_both_sides(conv_path: Path, make: Any) -> None:
    codec = ConversationCodec(conv_path)
    codec.save([make(1024)])
    assert_same(codec.load(), [make(1024)])
    with pytest.raises(EncodeError):
        codec.save([make(1025)])
    # 1025 levels written by another tool (the stdlib cannot: json.dumps hits the recursion limit first).
    deeper = "[" * 1025 + "]" * 1025 if make is nested_lists else '{"a":' * 1024 + "{}" + "}" * 1024
    conv_path.write_text(deeper + "\n")
    with pytest.raises(DecodeError):
        codec.load()


@pytest.mark.parametrize("make", [nested_lists, nested_dicts])
def test_5000_levels_refused_cleanly_on_save(conv_path: Path, make: Any) -> None:
    codec = ConversationCodec(conv_path)
    codec.save([{"old": True}])
    before = conv_path.read_bytes()
    with pytest.raises(EncodeError) as info:
        codec.save([make(5000)])
    assert isinstance(info.value, CodecError)
    assert conv_path.read_bytes() == before
    assert folder_listing(conv_path) == [conv_path.name]
    # The path names the outer and inner steps, not all 1024 of them.
    assert len(str(info.value)) < 300, str(info.value)
    assert "...(" in info.value.where


@pytest.mark.parametrize("text", ["[" * 5000 + "]" * 5000, '{"a":' * 5000 + "1" + "}" * 5000, "[" * 100_000])
def test_5000_levels_refused_cleanly_on_load(conv_path: Path, text: str) -> None:
    conv_path.write_text('{"fine": 1}\n' + text + "\n")
    with pytest.raises(DecodeError) as info:
        ConversationCodec(conv_path).load()
    assert info.value.lineno == 2


@pytest.mark.parametrize("kind", ["list", "dict", "list in dict", "via tuple"])
def test_circular_reference_raises_and_writes_nothing(conv_path: Path, kind: str) -> None:
    x: Any
    if kind == "list":
        x = [1]
        x.append(x)
    elif kind == "dict":
        x = {"a": 1}
        x["self"] = x
    elif kind == "list in dict":
        inner: list[Any] = []
        x = {"content": [{"parts": inner}]}
        inner.append(x)
    else:
        lst: list[Any] = []
        x = (lst,)
        lst.append(x)
    with pytest.raises(ValueError):
        json.dumps(x)  # the stdlib's "Circular reference detected" is a ValueError
    codec = ConversationCodec(conv_path)
    codec.save([{"old": True}])
    before = conv_path.read_bytes()
    with pytest.raises(EncodeError) as info:
        codec.save([{"fine": 1}, x])
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, CodecError)
    assert conv_path.read_bytes() == before
    assert folder_listing(conv_path) == [conv_path.name]


def test_shared_but_not_circular_references_are_fine(conv_path: Path) -> None:
    shared = {"k": [1, 2]}
    x = [shared, shared, {"a": shared, "b": [shared]}]
    check(conv_path, x)


# ------------------------------------------------------------------- JSON text from other writers, vs stdlib
#
# The round trips above only feed the loader what an encoder writes. Files from other tools hold any JSON
# text: numbers in every form ("1E+2", "0.10", 40 significant digits, "1e-400"), any escape ("\/", "\uD83D",
# upper-case hex), whitespace between tokens, duplicate keys. The loader must read each as json.loads does.
# One exception, by design: lines split as the original's text-mode reader split them, at "\n", "\r\n" and a
# bare "\r"; so "\r" is a line break, never whitespace inside a document (test_interop checks the splitting).

_ws = st.text(alphabet=" \t", max_size=2)
_digits = st.text(alphabet="0123456789", min_size=1, max_size=25) | st.text(
    alphabet="0123456789", min_size=300, max_size=800
)
_number_text = st.builds(
    lambda sign, first, rest, frac, exp: sign + (first + rest if first != "0" else "0") + frac + exp,
    st.sampled_from(["", "-"]),
    st.sampled_from("0123456789"),
    st.text(alphabet="0123456789", max_size=25),
    st.one_of(st.just(""), _digits.map(lambda d: "." + d)),
    st.one_of(
        st.just(""),
        st.builds(
            lambda e, s, d: e + s + d,
            st.sampled_from("eE"),
            st.sampled_from(["", "+", "-"]),
            st.text(alphabet="0123456789", min_size=1, max_size=4) | st.just("9" * 25),
        ),
    ),
)
_escape = st.one_of(
    st.sampled_from(['\\"', "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t"]),
    st.integers(0, 0xFFFF).flatmap(
        lambda c: st.sampled_from([f"\\u{c:04x}", f"\\u{c:04X}", f"\\u{c:04x}".upper().replace("\\U", "\\u")])
    ),
    st.sampled_from(["\\ud83d\\ude00", "\\uD800", "\\udc00\\ud800", "\\uDBFF\\uDFFF"]),
)
_raw = st.characters(exclude_categories=("Cs", "Cc")).filter(lambda c: c not in '"\\')
_string_text = st.lists(st.one_of(_escape, _raw), max_size=12).map(lambda parts: '"' + "".join(parts) + '"')
_literal = st.sampled_from(["true", "false", "null", "NaN", "Infinity", "-Infinity"])
_keys = st.one_of(st.sampled_from(['"a"', '"b"', '"\\u0061"', '""']), _string_text)


def _array(items: list[str], ws: str) -> str:
    return "[" + ws + ("," + ws).join(items) + ws + "]"


def _object(pairs: list[tuple[str, str]], ws: str) -> str:
    return "{" + ws + ("," + ws).join(f"{k}{ws}:{ws}{v}" for k, v in pairs) + ws + "}"


json_text = st.recursive(
    st.one_of(_number_text, _string_text, _literal),
    lambda children: st.one_of(
        st.builds(_array, st.lists(children, max_size=5), _ws),
        st.builds(_object, st.lists(st.tuples(_keys, children), max_size=5), _ws),
    ),
    max_leaves=20,
)
TEXT = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.filterwarnings("ignore:Generating overly large repr")
@TEXT
@given(text=json_text, before=_ws, after=_ws)
def test_any_json_text_loads_as_the_stdlib_reads_it(conv_path: Path, text: str, before: str, after: str) -> None:
    line = before + text + after
    expected = json.loads(line)
    # Not the last line: a last line ending with a TAB would say its turn goes on (docs/FORMAT.md, 1.2).
    conv_path.write_bytes(b'{"first": 1}\n' + line.encode("utf-8") + b'\n{"last": 2}\n')
    assert_same(ConversationCodec(conv_path).load(), [{"first": 1}, expected, {"last": 2}])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_number_text)
def test_number_text_loads_as_the_stdlib_reads_it(conv_path: Path, text: str) -> None:
    conv_path.write_bytes(f"{text}\n[{text}]\n".encode())
    expected = json.loads(text)
    assert_same(ConversationCodec(conv_path).load(), [expected, [expected]])


@pytest.mark.parametrize(
    "text",
    [
        "1E+2",
        "1e2",
        "0.10",
        "-0",
        "-0.0",
        "0e0",
        "1e-400",
        "-1e-400",
        "1e400",
        "-1E400",
        "123456789012345678901234567890",
        "0.1234567890123456789012345678901234567890",
        "9007199254740993",
        "9007199254740993.0",
        "2.2250738585072011e-308",  # the value that once hung Java and PHP
        "2.2250738585072012e-308",
        "4.9406564584124654e-324",
        "2.4703282292062327e-324",  # half the smallest subnormal: rounds to 0.0
        "2.4703282292062328e-324",  # just over half: rounds up to 5e-324
        "1.7976931348623158e308",  # rounds down to the max float
        "1.7976931348623159e308",  # rounds up to inf
        "0." + "0" * 400 + "1e400",
        "1" + "0" * 400 + "e-400",
        "1e99999999999999999999",
        "1e-99999999999999999999",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775808",
        "-9223372036854775809",
        "18446744073709551615",
        "18446744073709551616",
        "-18446744073709551616",
        "99999999999999999999",
        "100000000000000000000",
    ],
)
def test_number_text_corners(conv_path: Path, text: str) -> None:
    conv_path.write_bytes(f"[{text}]\n".encode())
    assert_same(ConversationCodec(conv_path).load(), [json.loads(f"[{text}]")])


# No "\r" or "\n": they end the line (see above).
_mutation_chars = st.sampled_from(list(' \t,:[]{}"\\0123456789-+.eEtrufalsnNIy\x00\x0c\x0b\x7fé\u2028\x85'))


@pytest.mark.filterwarnings("ignore:Generating overly large repr")
@TEXT
@given(text=json_text, data=st.data())
def test_mutated_json_text_is_judged_as_the_stdlib_judges_it(conv_path: Path, text: str, data: Any) -> None:
    # Differential: one character inserted, deleted or replaced; accepted with the same value, or refused
    # with a DecodeError on its line, exactly as json.loads decides.
    pos = data.draw(st.integers(0, len(text)))
    op = data.draw(st.sampled_from(["insert", "delete", "replace"]))
    ch = data.draw(_mutation_chars)
    if op == "insert":
        text = text[:pos] + ch + text[pos:]
    elif op == "delete":
        text = text[:pos] + text[pos + 1 :]
    else:
        text = text[:pos] + ch + text[pos + 1 :]
    try:
        expected = json.loads(text)
        accepted = True
    except ValueError:
        accepted = False
    # Not the last line: a last line ending with a TAB would say its turn goes on (docs/FORMAT.md, 1.2).
    conv_path.write_bytes(b"[0]\n" + text.encode("utf-8") + b"\n[1]\n")
    codec = ConversationCodec(conv_path)
    if not text.strip():
        assert codec.load() == [[0], [1]]  # blank as the original's `line.strip()` sees it: skipped
    elif accepted:
        assert_same(codec.load(), [[0], expected, [1]])
    else:
        with pytest.raises(DecodeError) as info:
            codec.load()
        assert info.value.lineno == 2
