"""Defects found by the corruption torture suite (torture/corruption.py), each reduced to its smallest case.

Each failed before its fix (they were pinned as strict xfails until the library was fixed).
"""

from __future__ import annotations

import os
import warnings
import zlib
from pathlib import Path
from typing import Any

import pytest
from conversation_codec import ConversationCodec, CorruptFileError, TornTailWarning


def flip(path: Path, offset: int, mask: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def test_a_torn_tail_from_byte_0_is_reported_and_set_aside(tmp_path: Path, options: dict[str, Any]) -> None:
    # What a process killed during the first append to a new file leaves.
    path = tmp_path / "c.jsonl"
    codec = ConversationCodec(path, **options)
    codec.append_turn({"role": "user", "content": "hi"})
    whole = path.read_bytes()
    os.truncate(path, 5)
    with pytest.warns(TornTailWarning):
        assert codec.load() == []
    report = codec.verify()
    assert (report.ok, report.torn_tail_bytes) == (False, 5)
    assert [Path(name).name for name in codec.repair()] == ["c.jsonl.torn-0"]
    assert (tmp_path / "c.jsonl.torn-0").read_bytes() == whole[:5]
    with warnings.catch_warnings():
        warnings.simplefilter("error", TornTailWarning)
        assert codec.load() == []


def test_a_flipped_bit_in_a_gzip_members_xlen_is_damage(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    codec = ConversationCodec(path, compressed=True)
    codec.save([{"a": 1}])
    codec.append_turn({"b": 2})
    codec.append_turn({"c": 3})
    flip(path, 11, 0x80)  # XLEN 0x000C -> 0x800C: an extra field longer than the file
    with warnings.catch_warnings():
        warnings.simplefilter("error", TornTailWarning)
        with pytest.raises(CorruptFileError) as raised:
            codec.load()
    assert raised.value.offset == 0
    assert not codec.verify().ok


@pytest.mark.parametrize("compressed", [False, True])
def test_a_flipped_line_break_after_the_last_token_is_damage(tmp_path: Path, compressed: bool) -> None:
    fernet = pytest.importorskip("cryptography.fernet")
    path = tmp_path / "c.jsonl"
    codec = ConversationCodec(path, fernet_key=fernet.Fernet.generate_key(), compressed=compressed)
    codec.save([{"a": 1}])
    codec.append_turn({"b": 2})
    flip(path, path.stat().st_size - 1, 0x08)  # "\n" -> "\x02": no append cut short leaves that
    with warnings.catch_warnings():
        warnings.simplefilter("error", TornTailWarning)
        with pytest.raises(CorruptFileError):
            codec.load()


def test_a_line_break_flipped_into_a_letter_after_an_authentic_token_is_damage(tmp_path: Path) -> None:
    fernet = pytest.importorskip("cryptography.fernet")
    path = tmp_path / "c.jsonl"
    codec = ConversationCodec(path, fernet_key=fernet.Fernet.generate_key())
    codec.save([{"a": 1}])
    codec.append_turn({"b": 2})  # a 32-byte header and 8 bytes of JSONL: a token without "=" padding
    assert not path.read_bytes().endswith(b"=\n")
    flip(path, path.stat().st_size - 1, 0x40)  # "\n" -> "J"
    with warnings.catch_warnings():
        warnings.simplefilter("error", TornTailWarning)
        with pytest.raises(CorruptFileError):
            codec.load()


def test_an_index_damaged_before_its_last_record_is_ignored_until_repair_writes_it_again(tmp_path: Path) -> None:
    # A writer checks only the index's last record (what keeps an append's cost flat), so damage before it stays
    # until the next save or repair(); readers see it (each record has its CRC) and read the data file instead.
    path = tmp_path / "c.jsonl"
    codec = ConversationCodec(path)
    codec.save([{"a": 1}])
    codec.append_turn({"b": 2})
    codec.append_turn({"c": 3})
    flip(Path(str(path) + ".idx"), 32 + 4, 0x01)  # the first record's length
    ConversationCodec(path).append_turn({"d": 4})
    report = codec.verify()
    assert report.ok and report.index.startswith("ignored")
    expected = [{"a": 1}, {"b": 2}, {"c": 3}, {"d": 4}]
    assert (codec.load(), codec.load(last=4), len(codec)) == (expected, expected, 4)
    assert codec.repair() == []
    assert codec.verify().index == "sound"
    assert codec.load(last=4) == expected


def test_repair_of_a_wrong_index_keeps_the_conversation(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    codec = ConversationCodec(path)
    codec.save([{"a": 1}])
    codec.append_turn({"b": 2})
    codec.append_turn({"c": 3})
    # The last record says 2 messages; its CRC matches (a writer's bug, or anyone who can write the folder).
    idx = Path(str(path) + ".idx")
    data = bytearray(idx.read_bytes())
    last = len(data) - 32
    data[last + 12 : last + 16] = (2).to_bytes(4, "little")
    data[last + 28 : last + 32] = zlib.crc32(bytes(data[last : last + 28])).to_bytes(4, "little")
    idx.write_bytes(bytes(data))
    assert codec.verify().index.startswith("wrong")
    assert [Path(name).name for name in codec.repair()] == []
    assert codec.load() == [{"a": 1}, {"b": 2}, {"c": 3}]
    assert codec.verify().ok


def test_an_append_after_repair_of_a_last_line_without_its_line_break_does_not_join_it(tmp_path: Path) -> None:
    # repair() wrote an index whose last record ended at a last line without "\n"; the next append, trusting the
    # index, wrote its turn right after that line: one line of two messages, a DecodeError for every reader.
    path = tmp_path / "c.jsonl"
    codec = ConversationCodec(path)
    codec.save([{"a": 1}, {"b": 2}])
    codec.append_turn({"c": 3})
    codec.append_turn({"d": 4})
    os.truncate(path, len(b'{"a":1}\n{"b":2}'))  # the index now runs past the data: ignored
    assert codec.verify().ok
    assert codec.repair() == []
    ConversationCodec(path).append_turn({"e": 5})
    assert ConversationCodec(path).load() == [{"a": 1}, {"b": 2}, {"e": 5}]
    assert codec.verify().ok


def test_an_append_to_another_tools_gzip_without_a_final_line_break_ends_that_line_first(tmp_path: Path) -> None:
    # Found by fuzzing the gzip scanner: the appended member joined the foreign member's last line (a DecodeError
    # for load(), while verify() said ok); now a member of ours after a cut line is damage, so the appender ends
    # the line with a member of its own first.
    import gzip

    path = tmp_path / "c.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"a":1}\n{"b":2}'))
    codec = ConversationCodec(path, compressed=True)
    codec.append_turn({"c": 3})
    codec.append_turn({"d": 4})
    expected = [{"a": 1}, {"b": 2}, {"c": 3}, {"d": 4}]
    fresh = ConversationCodec(path)
    assert (fresh.load(), len(fresh), fresh.load(last=3)) == (expected, 4, expected[1:])
    assert fresh.verify().ok
    assert gzip.decompress(path.read_bytes()) == b'{"a":1}\n{"b":2}\n{"c":3}\n{"d":4}\n'
