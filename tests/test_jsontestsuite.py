"""JSONTestSuite (tests/jsontestsuite, vendored: see its README): every parsing case, as a one-line conversation file.

- y_: valid JSON -> exactly one message, equal to the stdlib's `json.loads` of the file.
- n_: invalid JSON -> DecodeError on line 1 (never a crash or a hang).
- i_: implementation-defined -> one message or a DecodeError; when the stdlib accepts it, the same value.

Where this package follows the stdlib rather than RFC 8259 (documented, deliberate: it is a drop-in for a
stdlib-json design, whose files may hold these values):
- NaN, Infinity and -Infinity are accepted, as `json.loads` accepts them (json.dumps writes them for nan/inf).
  Three n_ files hold exactly these; for them we assert the stdlib's value, not a rejection.
- A file whose content is empty or JSON whitespace is a conversation with no messages ([]), as the original
  loader gives for blank lines; two n_ files are such (no data, a single space).
- A UTF-8 byte order mark at the very start of the file is skipped (as `json.loads` does for bytes); so a
  file holding only a BOM is an empty conversation.
The loader reads bytes as strict UTF-8: files in UTF-16, or with any invalid UTF-8 sequence (overlong forms,
encoded surrogates, stray continuation bytes, Latin-1), are refused with DecodeError, where the stdlib's text
reader would also fail.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from _helpers import assert_same
from conversation_codec import ConversationCodec, DecodeError, TornTailWarning

SUITE = Path(__file__).resolve().parent / "jsontestsuite" / "test_parsing"

if not SUITE.is_dir():  # a hard error, not a skip: CI must not pass silently without the suite.
    raise RuntimeError(f"JSONTestSuite not found at {SUITE}: it is part of the repository, restore it from git")

ALL_FILES = sorted(p.name for p in SUITE.iterdir() if p.suffix == ".json")


def _is_one_line(data: bytes) -> bool:
    return b"\n" not in data.removesuffix(b"\n")


ONE_LINE = [name for name in ALL_FILES if _is_one_line((SUITE / name).read_bytes())]
MULTI_LINE = [name for name in ALL_FILES if name not in ONE_LINE]

# n_ files that the stdlib accepts: we match the stdlib (see the module docstring).
STDLIB_ACCEPTS = {"n_number_NaN.json", "n_number_infinity.json", "n_number_minus_infinity.json"}
# n_ files that are blank for JSONL: zero messages.
BLANK = {"n_structure_no_data.json", "n_single_space.json", "n_structure_UTF8_BOM_no_data.json"}


def stdlib(data: bytes) -> tuple[bool, Any]:
    """(accepted, value) of the stdlib's json.loads on the file's bytes (it detects a BOM and UTF-16/32)."""
    try:
        return True, json.loads(data)
    except (ValueError, RecursionError):
        return False, None


def strict_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def load(path: Path, data: bytes) -> list[Any]:
    # Each case as a whole line: a last line without its line break that does not parse is a write cut short
    # (a torn tail, left out with a warning: test_an_unterminated_case_that_does_not_parse_is_a_torn_tail).
    path.write_bytes(data if data.endswith(b"\n") else data + b"\n")
    return ConversationCodec(path).load()


def test_the_suite_is_complete() -> None:
    # The README's figures: 318 files, 313 of them one line, 5 multi-line; a partial checkout would pass less.
    assert len(ALL_FILES) == 318
    assert len(ONE_LINE) == 313
    assert len(MULTI_LINE) == 5


def test_documented_exceptions_are_what_they_say() -> None:
    for name in STDLIB_ACCEPTS:
        accepted, value = stdlib((SUITE / name).read_bytes())
        assert accepted, name
        assert math.isnan(value[0]) or math.isinf(value[0]), name
    for name in BLANK:
        assert (SUITE / name).read_bytes().removeprefix(b"\xef\xbb\xbf").strip(b" \t\r\n") == b"", name


@pytest.mark.parametrize("name", [n for n in ONE_LINE if n.startswith("y_")])
def test_accept(conv_path: Path, name: str) -> None:
    data = (SUITE / name).read_bytes()
    accepted, expected = stdlib(data)
    assert accepted, f"the stdlib rejects {name}: update this test"
    assert_same(load(conv_path, data), [expected])


@pytest.mark.parametrize("name", [n for n in ONE_LINE if n.startswith("n_")])
def test_reject(conv_path: Path, name: str) -> None:
    data = (SUITE / name).read_bytes()
    if name in STDLIB_ACCEPTS:
        accepted, expected = stdlib(data)
        assert accepted
        assert_same(load(conv_path, data), [expected])
        return
    if name in BLANK:
        assert load(conv_path, data) == []
        return
    with pytest.raises(DecodeError) as info:
        load(conv_path, data)
    assert info.value.lineno == 1
    assert str(conv_path) in str(info.value)
    assert info.value.colno >= 1


@pytest.mark.parametrize("name", [n for n in ONE_LINE if n.startswith("i_")])
def test_implementation_defined(conv_path: Path, name: str) -> None:
    data = (SUITE / name).read_bytes()
    accepted, expected = stdlib(data)
    if not strict_utf8(data.removeprefix(b"\xef\xbb\xbf")):
        # UTF-16 or invalid UTF-8: refused (the stdlib's bytes loader guesses UTF-16; our format is UTF-8).
        with pytest.raises(DecodeError) as info:
            load(conv_path, data)
        assert info.value.lineno == 1
        return
    try:
        result = load(conv_path, data)
    except DecodeError as err:
        assert err.lineno == 1
        # The stdlib accepts every UTF-8 i_ case (big numbers become inf or 0.0, lone surrogates stay lone):
        # refusing one it accepts would break the fidelity rule.
        assert not accepted, f"the stdlib accepts {name} but we raised {err}"
        return
    assert len(result) == 1
    if accepted:
        assert_same(result, [expected])


@pytest.mark.parametrize("name", MULTI_LINE)
def test_multi_line_files_are_judged_line_by_line(conv_path: Path, name: str) -> None:
    # These are multi-line JSON documents, not JSONL: each line is its own message, so the loader must judge
    # each line alone. Expected: the stdlib's verdict on each non-blank line, in order.
    data = (SUITE / name).read_bytes()
    expected: list[Any] = []
    bad_line = None
    for lineno, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        accepted, value = stdlib(line)
        if not accepted:
            bad_line = lineno
            break
        expected.append(value)
    if bad_line is None:
        assert_same(load(conv_path, data), expected)
    else:
        with pytest.raises(DecodeError) as info:
            load(conv_path, data)
        assert info.value.lineno == bad_line


def test_all_cases_as_one_conversation(conv_path: Path) -> None:
    # Every y_ case as one line of the same file: the lines do not leak into each other.
    names = [n for n in ONE_LINE if n.startswith("y_")]
    datas = [(SUITE / n).read_bytes().removesuffix(b"\n") for n in names]
    expected = [stdlib(d)[1] for d in datas]
    assert_same(load(conv_path, b"\n".join(datas) + b"\n"), expected)


def test_each_rejected_case_names_its_own_line(conv_path: Path) -> None:
    # A rejected case after 3 good lines is reported on line 4, not 1.
    names = [n for n in ONE_LINE if n.startswith("n_") and n not in STDLIB_ACCEPTS | BLANK]
    prefix = b'{"a": 1}\n\n[2]\n'
    for name in names:
        data = (SUITE / name).read_bytes()
        with pytest.raises(DecodeError) as info:
            load(conv_path, prefix + data)
        assert info.value.lineno == 4, name


@pytest.mark.parametrize("name", [n for n in ONE_LINE if n.startswith(("y_", "n_"))])
def test_an_unterminated_case_is_whole_only_if_it_parses(conv_path: Path, name: str) -> None:
    # Without its line break, a last line is a message written by hand if it parses, else a write cut short.
    data = (SUITE / name).read_bytes().removesuffix(b"\n")
    accepted, expected = stdlib(data)
    conv_path.write_bytes(b'{"first": 1}\n' + data)
    codec = ConversationCodec(conv_path)
    if name in BLANK and not data.startswith(b"\xef\xbb\xbf"):  # a BOM is no whitespace after the start
        assert codec.load() == [{"first": 1}]
    elif accepted and strict_utf8(data):
        assert_same(codec.load(), [{"first": 1}, expected])
    else:
        with pytest.warns(TornTailWarning, match="from byte 13"):
            assert codec.load() == [{"first": 1}]
