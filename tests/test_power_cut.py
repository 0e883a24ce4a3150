"""What a power cut may leave, pinned down: defects found by the crash-state suite (torture/crash_states.py).

Each test names the defect it pins down; each failed before its fix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from conversation_codec import ConversationCodec, TornTailWarning


def _fsynced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records the path of every descriptor fsync()ed from now on."""
    flushed: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        flushed.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return flushed


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name the descriptors fsync()ed")
def test_append_that_creates_the_file_flushes_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "conversation.jsonl"
    flushed = _fsynced(monkeypatch)
    ConversationCodec(path).append_turn({"role": "user", "content": "hi"})
    assert str(tmp_path) in flushed


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name the descriptors fsync()ed")
def test_save_into_a_new_folder_flushes_its_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a" / "b" / "conversation.jsonl"
    flushed = _fsynced(monkeypatch)
    ConversationCodec(path).save([{"role": "user", "content": "hi"}])
    assert str(tmp_path) in flushed and str(tmp_path / "a") in flushed


def test_verify_and_repair_see_a_torn_tail_at_byte_0(conv_path: Path, options: dict[str, Any]) -> None:
    codec = ConversationCodec(conv_path, **options)
    codec.append_turn({"role": "user", "content": "hello"})  # the first append of a conversation...
    data = conv_path.read_bytes()
    conv_path.write_bytes(data[: len(data) // 2])  # ...cut short (a kill, or a power cut before its fsync)
    with pytest.warns(TornTailWarning):
        assert codec.load() == []
    report = codec.verify()
    assert (report.ok, report.torn_tail_bytes) == (False, len(data) // 2)
    assert codec.repair() == [str(conv_path) + ".torn-0"]


def test_a_first_append_never_leaves_part_of_its_frame_in_the_file(
    conv_path: Path, options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A first encrypted frame cut short at a valid token length read as the original design's one token under a
    # wrong key: DecryptionError for every reader, and repair() could not mend it. The first frame of a file is
    # now written as a save writes (a temporary file, flushed, renamed): the file holds it whole or not at all.
    from conversation_codec import files

    writes: list[str] = []
    real_flush = files.flush

    def flush(fd: int) -> None:
        writes.append(os.readlink(f"/proc/self/fd/{fd}"))
        raise OSError(5, "Input/output error")  # the power is about to go: the data never reached the disk

    monkeypatch.setattr(files, "flush", flush)
    codec = ConversationCodec(conv_path, **options)
    with pytest.raises(OSError, match="Input/output"):
        codec.append_turn({"role": "user", "content": "hello " * 20})
    assert writes and all(not w.endswith("/conversation.jsonl") for w in writes)  # only the temporary file
    assert not conv_path.exists()
    monkeypatch.setattr(files, "flush", real_flush)
    codec.append_turn([{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}])
    assert codec.load() == [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]
    assert codec.verify().ok


def test_a_torn_first_turn_of_a_plain_file_is_set_aside_with_its_leading_tab(conv_path: Path) -> None:
    # verify() and repair() measured a plain file's frames from its first byte that is not whitespace: a torn first
    # turn (TAB, then part of a line) was reported one byte short, and its TAB was left behind in the file.
    codec = ConversationCodec(conv_path)
    codec.append_turn([{"a": 1}, {"b": 2}])
    whole = conv_path.read_bytes()
    assert whole.startswith(b"\t")
    conv_path.write_bytes(whole[:6])
    with pytest.warns(TornTailWarning, match="the last 6 bytes"):
        assert codec.load() == []
    assert codec.verify().torn_tail_bytes == 6
    assert codec.repair() == [str(conv_path) + ".torn-0"]
    assert Path(str(conv_path) + ".torn-0").read_bytes() == whole[:6]
    assert conv_path.read_bytes() == b""
