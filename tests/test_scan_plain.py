"""scan_plain: frames of whole turns in plain JSONL, the torn tail after them, and the validator behind it.

The validator must accept exactly what `decode_lines` accepts (it is how a file without an index is counted
and how a torn write is told from whole turns), so most tests here are differential: the same bytes through
`scan_plain` and through `decode_lines`, same verdict, same count, same error position and reason.

The turn rules (docs/FORMAT.md): the lines of a turn but its last end with a TAB right before their `\\n`; a
turn ends after a `\\n` not preceded by a TAB, or at the end of the data when its last line has no `\\n`, is JSON
or blank and does not end with a TAB. Bytes after the last turn end are a torn tail, never validated.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any

import pytest
from conversation_codec import DecodeError, _core
from hypothesis import given, settings
from hypothesis import strategies as st

# JSONTestSuite's parsing cases (its README: y_ must be accepted, n_ refused, i_ either). Not copied into this
# branch: the env var points at a checkout while the suite is not yet under tests/.
JSONTESTSUITE = Path(os.environ.get("JSONTESTSUITE") or Path(__file__).parent / "jsontestsuite" / "test_parsing")
MISSING = (
    f"JSONTestSuite not found at {JSONTESTSUITE}: put its test_parsing/ folder there "
    "(or point the JSONTESTSUITE environment variable at one)"
)
# Without the suite, each suite test fails with that message rather than being skipped for want of cases.
SUITE_CASES = sorted(p.name for p in JSONTESTSUITE.glob("*.json")) if JSONTESTSUITE.is_dir() else ["missing"]

BOM = b"\xef\xbb\xbf"


def decode(data: bytes) -> tuple[list[Any] | None, DecodeError | None]:
    try:
        return _core.decode_lines(data), None
    except DecodeError as exc:
        return None, exc


def line_and_column(data: bytes, offset: int) -> tuple[int, int]:
    """The decoder's (lineno, colno) of a byte offset: lines split at \\n, \\r\\n and \\r; columns in characters."""
    if data.startswith(BOM):
        data, offset = data[3:], offset - 3
    lineno, start, at = 1, 0, 0
    while at < offset:
        if data[at] in b"\r\n":
            at += 2 if data[at : at + 2] == b"\r\n" else 1
            lineno, start = lineno + 1, at
        else:
            at += 1
    column = sum(1 for b in data[start:offset] if b & 0xC0 != 0x80) + 1
    return lineno, column


def check_frames(data: bytes, base: int, target: int) -> tuple[list[tuple[int, int, int, int]], int, Any]:
    """scan_plain, with what must hold of any result: frames cover [base, end) one after another, each of whole
    turns and of about `target` bytes, with the CRC of its bytes."""
    frames, end, error = _core.scan_plain(data, base=base, target=target)
    at = base
    for i, (offset, length, count, crc) in enumerate(frames):
        assert offset == at and length > 0 and count >= 0
        chunk = data[offset - base : offset - base + length]
        assert crc == zlib.crc32(chunk)
        if i < len(frames) - 1 or error is not None or offset - base + length < len(data):
            assert chunk.endswith(b"\n") and not chunk.endswith(b"\t\n"), "a frame ends at a turn's end"
        if i < len(frames) - 1:
            assert length >= target
        at += length
    assert end == at
    if error is not None:
        assert error[0] >= end
    return frames, end, error


def assert_same_verdict(data: bytes) -> None:
    """`data` (whose last turn is whole) through both: the same verdict, count and error."""
    assert data.endswith(b"\n") and not data.endswith(b"\t\n")
    frames, end, error = check_frames(data, 0, 64)
    messages, exc = decode(data)
    if exc is None:
        assert messages is not None
        assert error is None, f"scan_plain refused what decode_lines accepts: {error}"
        assert end == len(data)
        assert sum(f[2] for f in frames) == len(messages)
    else:
        assert error is not None, f"scan_plain accepted what decode_lines refuses: {exc}"
        offset, reason = error
        assert reason == exc.reason
        assert line_and_column(data, offset) == (exc.lineno, exc.colno)


# (a) JSONTestSuite, differential.


def test_the_suite_is_there() -> None:
    assert JSONTESTSUITE.is_dir(), MISSING
    assert len(SUITE_CASES) > 300


@pytest.mark.parametrize("name", SUITE_CASES)
def test_suite_case_alone(name: str) -> None:
    """Each case as a file of its own. The five cases with raw line breaks inside are judged line by line, as
    both split them."""
    assert JSONTESTSUITE.is_dir(), MISSING
    case = (JSONTESTSUITE / name).read_bytes()
    data = case if case.endswith(b"\n") else case + b"\n"
    assert_same_verdict(data)
    messages, _ = decode(data)
    if name.startswith("y_") and b"\n" not in case.rstrip(b"\n"):
        assert messages is not None and len(messages) == 1


@pytest.mark.parametrize("name", SUITE_CASES)
def test_suite_case_between_whole_turns(name: str) -> None:
    """Each case as a line between others: an error is placed within it, and the frames before stand."""
    assert JSONTESTSUITE.is_dir(), MISSING
    case = (JSONTESTSUITE / name).read_bytes().removesuffix(b"\n")
    before = b'{"role":"user","content":"hi"}\n'
    data = before + case + b"\n[2]\n"
    assert_same_verdict(data)
    frames, end, error = check_frames(data, 1000, 1)
    if error is not None:
        assert 1000 + len(before) <= error[0] <= 1000 + len(before) + len(case)
        assert (frames, end) == ([(1000, len(before), 1, zlib.crc32(before))], 1000 + len(before))


# (b) Arbitrary JSON, and arbitrary damage to it.

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(st.characters(exclude_categories=[]), max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=5),
    max_leaves=25,
)


@st.composite
def jsonl_lines(draw: st.DrawFn) -> bytes:
    value = draw(json_values)
    text = json.dumps(value, ensure_ascii=draw(st.booleans()))
    # Lone surrogates written raw (ensure_ascii=False) become encoded surrogates: invalid UTF-8 to both.
    return text.encode("utf-8", "surrogatepass")


@st.composite
def mutated(draw: st.DrawFn, lines: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(b"\n".join(draw(st.lists(lines, min_size=1, max_size=4))))
    interesting = st.sampled_from(b' \t\r\n"\\{}[],:0-.eE+uUnN\x00\x0c\x1f\x7f\x80\xc3\xa9\xed\xef\xff')
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = draw(interesting | st.integers(0, 255))
        if op == "insert":
            data.insert(draw(st.integers(0, len(data))), byte)
        elif data:
            at = draw(st.integers(0, len(data) - 1))
            if op == "replace":
                data[at] = byte
            else:
                del data[at]
    return bytes(data)


@settings(max_examples=400, deadline=None)
@given(st.lists(jsonl_lines(), min_size=1, max_size=5))
def test_json_values_are_accepted_and_counted(lines: list[bytes]) -> None:
    assert_same_verdict(b"\n".join(lines) + b"\n")


@settings(max_examples=600, deadline=None)
@given(mutated(jsonl_lines()))
def test_damaged_json_gets_the_decoders_verdict(data: bytes) -> None:
    # A last line "0" ends the data with a whole turn, whatever the damage left at the end (a tab, a '\r'...).
    assert_same_verdict(data + b"\n0\n")


def test_huge_ints_are_the_one_documented_difference() -> None:
    data = b"9" * 5000 + b"\n"
    assert _core.scan_plain(data)[2] is None
    with pytest.raises(DecodeError):
        _core.decode_lines(data)


def test_depth_limit_matches_the_decoder() -> None:
    for depth in (1024, 1025, 100_000):
        assert_same_verdict(b"[" * depth + b"]" * depth + b"\n")
        assert_same_verdict(b'{"a":' * depth + b"0" + b"}" * depth + b"\n")


# (c) The turn rules.


def reference_end(data: bytes) -> int:
    """The end of the last whole turn, by the rules read literally (every line of the tail validated by
    decode_lines, which the differential tests above tie to the validator)."""
    skip = 3 if data.startswith(BOM) else 0
    last_newline = data.rfind(b"\n", skip)
    tail = data[last_newline + 1 if last_newline >= 0 else skip :]
    if last_newline < 0 and not tail:
        return len(data)  # nothing, or a BOM alone: one blank line
    if tail and not tail.endswith(b"\t") and all(decode(line)[1] is None for line in tail.split(b"\r")):
        return len(data)
    for at in range(len(data) - 1, skip - 1, -1):
        if data[at] == 0x0A and (at == 0 or data[at - 1] != 0x09):
            return at + 1
    return 0


def test_a_torn_turn_is_a_tail_from_the_turns_start() -> None:
    first = b'{"role":"user","content":"hi"}\n'
    turn = '{"role":"assistant","content":"é"}\t\n{"role":"tool","content":[1,2]}\t\n[3]\n'.encode()
    data = first + turn
    json_ends = {len(first) + turn.index(b"}\t\n") + 1, len(first) + turn.index(b"]}\t\n") + 2}
    for cut in range(len(data) + 1):
        frames, end, error = check_frames(data[:cut], 0, 1)
        assert error is None
        assert end == reference_end(data[:cut]), cut
        if cut < len(first) - 1:
            assert end == 0
        elif cut <= len(first):
            assert end == cut  # the first turn whole (with or without its '\n')
        elif cut >= len(data) - 1:
            assert end == cut  # the whole turn ('[3]' without its '\n' is whole: no tab ends it)
            assert [f[2] for f in frames] == [1, 3]
        elif cut in json_ends:
            # Cut between a line's JSON and its tab: the data cannot tell it from a last line without a '\n'
            # (the one case the tab marking cannot detect), and the rule takes it as whole.
            assert end == cut
        else:
            assert end == len(first), cut  # the tail starts at the turn's start
            assert [f[2] for f in frames] == [1]
    # After a "\t\n" is a tail; after the final '\n', whole.
    after_tab = len(first) + turn.index(b"\t\n") + 2
    assert check_frames(data[:after_tab], 0, 1)[1] == len(first)
    assert check_frames(data, 0, 1)[1] == len(data)


def test_frames_are_cut_at_turn_ends_only() -> None:
    turn = b'{"a":"' + b"x" * 50 + b'"}\t\n' + b'{"b":"' + b"y" * 50 + b'"}\n'
    data = turn * 10
    for target in (0, 1, 60, len(turn), len(turn) + 1, 500, 10_000):
        frames, end, error = check_frames(data, 7, target)
        assert (end, error) == (7 + len(data), None)
        assert all((offset - 7) % len(turn) == 0 for offset, _, _, _ in frames)
        assert all(count % 2 == 0 for _, _, count, _ in frames)
        assert sum(f[2] for f in frames) == 20


def test_crlf_files() -> None:
    data = b'{"a":1}\r\n\r\n[2]\r\n"three"\r\n'
    frames, end, error = check_frames(data, 0, 1)
    assert (end, error) == (len(data), None)
    assert [f[2] for f in frames] == [1, 0, 1, 1]
    # A CRLF file cut after a '\r': its last line is JSON, so whole (the next append adds the '\n').
    assert check_frames(data[:-1], 0, 1)[1] == len(data) - 1
    # '\r' precedes the '\n', so "\t\r\n" ends a turn: tab marking needs '\n' line ends.
    assert [f[2] for f in check_frames(b"1\t\r\n2\n", 0, 1)[0]] == [1, 1]
    # A lone '\r' splits lines (as the decoder does) but never ends a turn.
    frames, end, _ = check_frames(b"1\r2\r\n3\r4\n", 0, 1)
    assert [f[2] for f in frames] == [2, 2]
    for cut in range(len(data) + 1):
        assert check_frames(data[:cut], 0, 1)[1] == reference_end(data[:cut]), cut


def test_a_bom_is_skipped_at_the_start_of_the_file_only() -> None:
    data = BOM + b'{"a":1}\n{"b":2}\n'
    frames, end, error = check_frames(data, 0, 1 << 20)
    assert frames == [(0, len(data), 2, zlib.crc32(data))]
    assert (end, error) == (len(data), None)
    assert check_frames(BOM, 0, 1)[0] == [(0, 3, 0, zlib.crc32(BOM))]
    assert check_frames(BOM + b"1", 0, 1)[0] == [(0, 4, 1, zlib.crc32(BOM + b"1"))]
    assert check_frames(BOM + b"[", 0, 1)[:2] == ([], 0)
    # Past the start of the file it is not skipped: the decoder refuses it there too.
    assert check_frames(data, 5, 1)[2] == (5, "expecting a value")
    assert check_frames(b"1\n" + data, 0, 1)[2] == (2, "expecting a value")


def test_blank_lines() -> None:
    data = "\n\n1\n   \n\x0c\n\u00a0\u3000\n2\n\n".encode()
    frames, end, error = check_frames(data, 0, 1 << 20)
    assert ([f[2] for f in frames], end, error) == ([2], len(data), None)
    assert sum(f[2] for f in check_frames(data, 0, 1)[0]) == 2
    # A blank line that ends with a tab continues its turn like any other.
    assert check_frames(b"1\n \t\n", 0, 1)[1] == 2
    assert check_frames(b"1\n \t\n2\n", 0, 1)[0][1][2] == 1


@pytest.mark.parametrize(
    ("last", "whole"),
    [
        (b'{"a":1}', True),
        (b"  ", True),
        (b"\x0c", True),
        (b"2\r", True),
        (b"2\r3", True),
        (b'{"a":', False),
        (b"2\t", False),
        (b"\t", False),
        (b"2 \t", False),
        (b"2\r{", False),
        (b"\xff", False),
    ],
)
def test_a_last_line_without_newline(last: bytes, whole: bool) -> None:
    data = b"1\n" + last
    frames, end, error = check_frames(data, 0, 1)
    assert error is None  # a tail is never an error
    assert end == (len(data) if whole else 2)
    messages, _ = decode(data)
    if whole:
        assert messages is not None and sum(f[2] for f in frames) == len(messages)


def test_errors_stop_before_the_frame_holding_them() -> None:
    data = b'{"a":1}\n[2]\n{"b":\xff}\n[4]\n'
    frames, end, error = check_frames(data, 100, 1)
    assert (len(frames), end) == (2, 112)
    assert error == (117, "expecting a value")
    frames, end, error = check_frames(data, 100, 1 << 20)
    assert (frames, end, error) == ([], 100, (117, "expecting a value"))
    # The whole turn holding the bad line goes, not just the line.
    frames, end, error = check_frames(b"1\n2\t\n[1,]\t\n3\n", 0, 1)
    assert (end, error) == (2, (8, "expecting a value"))
    # The reason is the decoder's, at the column where it stops.
    for line, reason in [
        (b'"\\ud800\\x"', "invalid escape"),
        (b'"\xed\xa0\x80"', "invalid UTF-8"),
        (b'"abc', "unterminated string"),
        (b"[1] 2", "extra data after the value"),
        (b"[" * 1025, "nested deeper than 1024 levels"),
    ]:
        assert check_frames(line + b"\n", 0, 1)[2][1] == reason
        assert_same_verdict(line + b"\n")


# (d) Frames of random chat files, at random bases and targets.

messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": st.text(max_size=40)}),
    min_size=1,
    max_size=4,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(messages, max_size=12), st.integers(0, 1 << 40), st.integers(0, 400), st.data())
def test_frames_cover_the_whole_turns(turns: list[list[Any]], base: int, target: int, data: st.DataObject) -> None:
    blob = b"".join(b"\t\n".join(json.dumps(m).encode() for m in turn) + b"\n" for turn in turns)
    frames, end, error = check_frames(blob, base, target)
    assert (end, error) == (base + len(blob), None)
    assert sum(f[2] for f in frames) == sum(len(t) for t in turns)
    # Torn anywhere: the frames before the cut stand, and whole turns only.
    cut = data.draw(st.integers(0, len(blob)))
    frames, end, error = check_frames(blob[:cut], base, target)
    assert error is None and end - base == reference_end(blob[:cut])
    decoded = _core.decode_lines(blob[: end - base])
    assert sum(f[2] for f in frames) == len(decoded)
