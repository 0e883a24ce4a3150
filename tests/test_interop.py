"""Interoperability with the original design (benches/baselines.py `Original`) and with other writers/readers.

Files the original wrote load here unchanged; plain files written here load with the original's loader and
with the stdlib's one-liner; files from other tools (CRLF line endings, no final newline) load.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from _helpers import assert_same, json_values, reference
from conversation_codec import ConversationCodec, DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benches.baselines import Original

HYPOTHESIS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def stdlib_load(path: Path) -> list[Any]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ------------------------------------------------------------------------------- original -> here


def test_original_plain_file_loads_here(conv_path: Path, conversation: list[Any]) -> None:
    Original(conv_path).save(conversation)
    assert_same(ConversationCodec(conv_path).load(), reference(conversation))


def test_original_encrypted_file_loads_here(conv_path: Path, conversation: list[Any], fernet_key: bytes) -> None:
    Original(conv_path, fernet_key=fernet_key).save(conversation)
    assert_same(ConversationCodec(conv_path, fernet_key=fernet_key).load(), reference(conversation))


def test_original_redacted_file_loads_here(conv_path: Path, conversation: list[Any]) -> None:
    def redact(m: Any) -> Any:
        return {**m, "content": "[redacted]"}

    Original(conv_path, redact=redact).save(conversation)
    assert ConversationCodec(conv_path, redact=redact).load() == [redact(m) for m in conversation]


def test_original_empty_files_load_here(conv_path: Path, fernet_key: bytes) -> None:
    Original(conv_path).save([])
    assert ConversationCodec(conv_path).load() == []
    Original(conv_path, fernet_key=fernet_key).save([])
    assert ConversationCodec(conv_path, fernet_key=fernet_key).load() == []


@HYPOTHESIS
@given(messages=st.lists(json_values, max_size=6))
def test_original_plain_files_load_here_property(conv_path: Path, messages: list[Any]) -> None:
    # The original writes ASCII with escapes (ensure_ascii), ", " and ": " separators, NaN/Infinity.
    Original(conv_path).save(messages)
    assert_same(ConversationCodec(conv_path).load(), [reference(m) for m in messages])


# ------------------------------------------------------------------------------- here -> original


def test_plain_file_loads_with_original(conv_path: Path, conversation: list[Any]) -> None:
    ConversationCodec(conv_path).save(conversation)
    assert_same(Original(conv_path).load(), reference(conversation))


def test_plain_file_loads_with_stdlib_one_liner(conv_path: Path, conversation: list[Any]) -> None:
    ConversationCodec(conv_path).save(conversation)
    assert_same(stdlib_load(conv_path), reference(conversation))


def test_each_line_is_one_stdlib_document(conv_path: Path, conversation: list[Any]) -> None:
    ConversationCodec(conv_path).save(conversation)
    lines = conv_path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert [json.loads(line) for line in lines[:-1]] == conversation


@HYPOTHESIS
@given(messages=st.lists(json_values, max_size=6))
def test_plain_files_load_with_original_property(conv_path: Path, messages: list[Any]) -> None:
    # Our output is UTF-8 (not ASCII-escaped): the original reads it as UTF-8 text, line by line, where a raw
    # U+2028, U+0085 or U+001E must not split a line (text-mode iteration splits on \n, \r and \r\n only,
    # and \r is always escaped inside strings).
    ConversationCodec(conv_path).save(messages)
    assert_same(Original(conv_path).load(), [reference(m) for m in messages])
    assert_same(stdlib_load(conv_path), [reference(m) for m in messages])


def test_encrypted_files_of_ours_are_bound_and_not_for_the_original(conv_path: Path, fernet_key: bytes) -> None:
    # Deliberate difference: each encrypted frame starts with a header (conversation id, place) inside the
    # authenticated plaintext, so frames cannot be dropped or reordered. The original's reader, which decrypts
    # the whole file as one token, cannot read that; files of the original still load here (above).
    ConversationCodec(conv_path, fernet_key=fernet_key).save([{"content": "line\u2028separator"}])
    with pytest.raises(UnicodeDecodeError):
        Original(conv_path, fernet_key=fernet_key).load()
    assert ConversationCodec(conv_path, fernet_key=fernet_key).load() == [{"content": "line\u2028separator"}]


# ------------------------------------------------------------------------------- other writers


def test_crlf_line_endings(conv_path: Path, conversation: list[Any]) -> None:
    conv_path.write_bytes(b"".join(json.dumps(m).encode() + b"\r\n" for m in conversation))
    assert_same(ConversationCodec(conv_path).load(), reference(conversation))


def test_mixed_line_endings_and_blank_crlf_lines(conv_path: Path) -> None:
    conv_path.write_bytes(b'{"a": 1}\r\n\r\n[2]\n\r\n"three"\r\n')
    assert ConversationCodec(conv_path).load() == [{"a": 1}, [2], "three"]


@pytest.mark.parametrize(
    "data",
    [
        b"[1]\r[2]\r",  # classic Mac OS line endings
        b"[1]\r\n[2]\r[3]\n\r\n[4]",
        b"\r\r\n\n[1]\r\r",
        b'{"a": "x\\ry"}\r{"b": 2}',
    ],
)
def test_lines_split_as_the_original_splits_them(conv_path: Path, data: bytes) -> None:
    # The original read in text mode: "\n", "\r\n" and a bare "\r" all end a line.
    conv_path.write_bytes(data)
    assert_same(ConversationCodec(conv_path).load(), Original(conv_path).load())


def test_bare_cr_inside_a_document_is_a_line_break(conv_path: Path) -> None:
    # So "[1\r]" is two broken lines, as the original found, not a document with whitespace (json.loads's view).
    conv_path.write_bytes(b'{"ok": 1}\n[1\r]\n')
    with pytest.raises(ValueError):
        Original(conv_path).load()
    with pytest.raises(DecodeError) as info:
        ConversationCodec(conv_path).load()
    assert info.value.lineno == 2


@pytest.mark.parametrize(
    "blank", ["\x0c", "\x0b", " \x1c\x1d\x1e\x1f ", "\x85", "\xa0", "\u2028\u2029", "\u3000\u205f", "\t \x0c "]
)
def test_lines_blank_to_the_original_are_skipped(conv_path: Path, blank: str) -> None:
    # The original skipped every line whose str.strip() is empty, Unicode spaces included.
    conv_path.write_bytes(f'{{"a": 1}}\n{blank}\n[2]\n{blank}'.encode())
    assert Original(conv_path).load() == [{"a": 1}, [2]]
    assert ConversationCodec(conv_path).load() == [{"a": 1}, [2]]


def test_no_trailing_newline(conv_path: Path, conversation: list[Any]) -> None:
    conv_path.write_bytes("\n".join(json.dumps(m) for m in conversation).encode())
    assert_same(ConversationCodec(conv_path).load(), reference(conversation))


def test_single_message_no_trailing_newline(conv_path: Path) -> None:
    conv_path.write_bytes(b'{"role": "user", "content": "hi"}')
    assert ConversationCodec(conv_path).load() == [{"role": "user", "content": "hi"}]


def test_non_ascii_utf8_written_by_other_tools(conv_path: Path) -> None:
    messages = [{"content": "Zürich 天気 😀 \u2028"}, {"ключ": "значение"}]
    conv_path.write_bytes(b"".join(json.dumps(m, ensure_ascii=False).encode("utf-8") + b"\n" for m in messages))
    assert ConversationCodec(conv_path).load() == messages


def test_pretty_separators_and_indentation_inside_a_line(conv_path: Path) -> None:
    conv_path.write_bytes(b'  { "a" :  [ 1 ,2 , { "b" :null } ] ,"c":\t"d" }  \n')
    assert ConversationCodec(conv_path).load() == [{"a": [1, 2, {"b": None}], "c": "d"}]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_large_utf8_crlf_file_from_another_tool(conv_path: Path, seed: int) -> None:
    # ~9 MB of raw UTF-8 (ensure_ascii=False) with CRLF endings and lines of random lengths: multi-byte
    # characters, escapes and "\r\n" pairs fall across the loader's block boundaries at varied offsets.
    rng = random.Random(seed)
    pieces = ["a", "é", "中", "😀", "\\", '"', "\n", "\u2028", " "]
    messages = [{"i": i, "text": "".join(rng.choices(pieces, k=rng.randrange(1, 4000)))} for i in range(4000)]
    data = b"".join(json.dumps(m, ensure_ascii=False).encode("utf-8") + b"\r\n" for m in messages)
    assert len(data) > 8 << 20
    conv_path.write_bytes(data)
    assert ConversationCodec(conv_path).load() == messages


@pytest.mark.parametrize("sep", [(",", ":"), (", ", ": ")])
def test_orjson_or_compact_writers(conv_path: Path, conversation: list[Any], sep: tuple[str, str]) -> None:
    conv_path.write_text("".join(json.dumps(m, separators=sep) + "\n" for m in conversation), encoding="utf-8")
    assert ConversationCodec(conv_path).load() == conversation
