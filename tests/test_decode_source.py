"""The `source` of a decode names a file in errors: any str, including a path that is not valid UTF-8.

os.fsdecode() turns the bytes of such a path into lone surrogates (surrogateescape); the core must carry that
str unchanged into DecodeError instead of failing to encode it as UTF-8.
"""

from __future__ import annotations

import os

import pytest
from conversation_codec import DecodeError, _core

NON_UTF8 = os.fsdecode(b"caf\xe9.jsonl") if os.name == "posix" else "caf\udce9.jsonl"


def test_the_name_is_a_surrogate_escaped_path() -> None:
    assert NON_UTF8 == "caf\udce9.jsonl"


def test_decode_lines_names_a_non_utf8_source() -> None:
    with pytest.raises(DecodeError) as info:
        _core.decode_lines(b'{"a": 1}\n[1,\n', source=NON_UTF8)
    assert info.value.source == NON_UTF8
    assert (info.value.lineno, info.value.colno) == (2, 4)


def test_line_decoder_names_a_non_utf8_source() -> None:
    decoder = _core.LineDecoder(source=NON_UTF8, first_line=5)
    assert decoder.feed(b'{"a": 1}\n') == [{"a": 1}]
    with pytest.raises(DecodeError) as info:
        decoder.feed(b"nope\n")
    assert info.value.source == NON_UTF8
    assert info.value.lineno == 6


def test_the_source_object_is_passed_through_unchanged() -> None:
    class Path(str):
        pass

    name = Path("conv.jsonl")
    with pytest.raises(DecodeError) as info:
        _core.decode_lines(b"]\n", source=name)
    assert info.value.source is name
    with pytest.raises(DecodeError) as info:
        _core.LineDecoder(source=name).finish() or _core.LineDecoder(source=name).feed(b"]\n")
    assert info.value.source is name


def test_the_default_source() -> None:
    with pytest.raises(DecodeError) as info:
        _core.decode_lines(b"]\n")
    assert info.value.source == "<bytes>"
    with pytest.raises(DecodeError) as info:
        _core.LineDecoder().feed(b"]\n")
    assert info.value.source == "<bytes>"
