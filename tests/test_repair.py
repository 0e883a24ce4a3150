"""verify() reports what is wrong with a conversation file, where; repair() makes it sound and deletes nothing."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import pytest
from _helpers import FORMATS
from conversation_codec import ConversationCodec, CorruptFileError, TornTailWarning
from cryptography.fernet import Fernet


def message(i: int) -> dict[str, Any]:
    return {"role": ("user", "assistant")[i % 2], "content": f"message {i}", "i": i}


def appended(path: Path, options: dict[str, Any], turns: int) -> tuple[ConversationCodec, list[int]]:
    """A conversation of `turns` appended turns of two messages; returns the codec and where each turn starts."""
    codec = ConversationCodec(path, **options)
    starts = []
    for i in range(turns):
        starts.append(path.stat().st_size if path.exists() else 0)
        codec.append_turn([message(2 * i), message(2 * i + 1)])
    return codec, starts


def damage_at(start: int, options: dict[str, Any]) -> int:
    """A byte of the frame at `start` whose flip is damage: plain JSON's opening brace (after the TAB that opens a
    turn of several messages); inside the deflate data or the token otherwise."""
    return start + 1 if not options else start + 30


def test_a_sound_file_verifies(tmp_path: Path, options: dict[str, Any]) -> None:
    codec = ConversationCodec(tmp_path / "c.jsonl", **options)
    codec.save([message(i) for i in range(3000)])
    codec.append_turn([message(3000), message(3001)])
    report = codec.verify()
    assert (report.ok, report.messages, report.torn_tail_bytes, report.errors) == (True, 3002, 0, [])
    assert report.frames >= 2
    assert report.index == "sound"
    assert codec.repair() == []  # nothing to do, nothing written


def test_a_missing_file_verifies_as_empty(tmp_path: Path) -> None:
    report = ConversationCodec(tmp_path / "none.jsonl").verify()
    assert (report.ok, report.messages, report.frames) == (True, 0, 0)


def test_a_torn_tail_is_reported_then_set_aside(tmp_path: Path, options: dict[str, Any]) -> None:
    path = tmp_path / "c.jsonl"
    codec, starts = appended(path, options, 4)
    whole = path.read_bytes()
    os.truncate(path, len(whole) - 3)
    report = codec.verify()
    assert not report.ok
    assert report.torn_tail_bytes == len(whole) - 3 - starts[-1]
    assert report.messages == 6 and report.errors == []
    written = codec.repair()
    assert [Path(name).name for name in written] == [f"c.jsonl.torn-{starts[-1]}"]
    assert Path(written[0]).read_bytes() == whole[starts[-1] : len(whole) - 3]
    with warnings.catch_warnings():
        warnings.simplefilter("error", TornTailWarning)
        assert codec.load() == [message(i) for i in range(6)]
    assert codec.verify().ok


def damaged_in_the_middle(path: Path, options: dict[str, Any]) -> tuple[ConversationCodec, list[int], bytes]:
    """Five turns of two messages, the third damaged: the codec, where each turn starts, the damaged bytes."""
    codec, starts = appended(path, options, 5)
    data = bytearray(path.read_bytes())
    data[damage_at(starts[2], options)] ^= 0x04
    path.write_bytes(bytes(data))
    return codec, starts, bytes(data)


def test_damage_in_the_middle_is_reported_with_its_offset(tmp_path: Path, options: dict[str, Any]) -> None:
    codec, starts, _ = damaged_in_the_middle(tmp_path / "c.jsonl", options)
    report = codec.verify()
    assert not report.ok
    assert report.errors, report
    assert all(starts[2] <= offset < starts[3] for offset, _ in report.errors), (report.errors, starts)
    assert report.messages == 8  # every other frame reads back


def test_repair_keeps_every_intact_frame_and_the_damaged_original(tmp_path: Path, options: dict[str, Any]) -> None:
    codec, _, data = damaged_in_the_middle(tmp_path / "c.jsonl", options)
    with pytest.raises((CorruptFileError, ValueError)):
        codec.load()
    written = codec.repair()
    assert [Path(name).name for name in written] == ["c.jsonl.damaged"]
    assert Path(written[0]).read_bytes() == data  # the damaged original, kept whole
    expected = [message(i) for i in range(10) if i not in (4, 5)]
    assert codec.load() == expected
    assert codec.verify().ok
    codec.append_turn(message(10))  # and the conversation goes on
    assert codec.load() == [*expected, message(10)]


def test_repair_never_turns_a_wrong_key_into_an_empty_conversation(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    appended(path, FORMATS["fernet"], 3)
    before = path.read_bytes()
    wrong = ConversationCodec(path, fernet_key=Fernet.generate_key())
    with pytest.raises(ValueError):  # a DecryptionError
        wrong.repair()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl", "c.jsonl.idx"]


def test_a_damaged_index_is_reported_and_changes_no_result(tmp_path: Path, options: dict[str, Any]) -> None:
    path = tmp_path / "c.jsonl"
    codec = ConversationCodec(path, **options)
    codec.save([message(i) for i in range(20000)])  # several frames (gzip's hold 1 MiB): an index
    idx = path.with_name(path.name + ".idx")
    data = bytearray(idx.read_bytes())
    data[40] ^= 1  # the first record's stored length
    idx.write_bytes(bytes(data))
    report = codec.verify()
    assert report.index.startswith("ignored") and report.messages == 20000
    assert codec.load(last=2) == [message(19998), message(19999)]
