"""What a power cut may leave, pinned down: defects found by the crash-state suite (torture/crash_states.py).

Each test names the defect it pins down and is marked xfail(strict=True) until the library is fixed: then it
passes, and the mark must go.
"""

from __future__ import annotations

import os
import warnings
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
@pytest.mark.xfail(
    strict=True,
    reason="defect: append_turn() that creates the file never flushes its folder, so with durable=True a power cut "
    "after it returned can lose the file (POSIX: a new name is durable only once its folder is fsynced)",
)
def test_append_that_creates_the_file_flushes_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "conversation.jsonl"
    flushed = _fsynced(monkeypatch)
    ConversationCodec(path).append_turn({"role": "user", "content": "hi"})
    assert str(tmp_path) in flushed


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name the descriptors fsync()ed")
@pytest.mark.xfail(
    strict=True,
    reason="defect: the folders save() creates (files.make_private_dirs) are never flushed into their parents, so "
    "with durable=True a power cut after save() returned can lose the new folder and the conversation in it",
)
def test_save_into_a_new_folder_flushes_its_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a" / "b" / "conversation.jsonl"
    flushed = _fsynced(monkeypatch)
    ConversationCodec(path).save([{"role": "user", "content": "hi"}])
    assert str(tmp_path) in flushed and str(tmp_path / "a") in flushed


@pytest.mark.xfail(
    strict=True,
    reason="defect: verify() and repair() miss a torn tail that starts at byte 0 (storage.Salvage.torn uses 0 for "
    "'no torn tail'): verify() says ok while load() warns, and repair() sets nothing aside",
)
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


@pytest.mark.xfail(
    strict=True,
    reason="defect: a torn first encrypted frame whose length happens to be a valid token length is taken for a "
    "whole token of the original design (one token, no line break), fails to decrypt, and is reported as a wrong key "
    "(DecryptionError) by load(), len() and append_turn(); repair() cannot mend it",
)
def test_a_torn_first_encrypted_frame_is_a_torn_tail(conv_path: Path, fernet_key: bytes) -> None:
    codec = ConversationCodec(conv_path, fernet_key=fernet_key)
    codec.append_turn({"role": "user", "content": "hello " * 20})
    token = conv_path.read_bytes()
    for cut in range(1, len(token) - 1):  # every cut a power cut before the append's fsync may leave
        conv_path.write_bytes(token[:cut])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TornTailWarning)
            assert codec.load() == [], f"cut at byte {cut}"
            assert len(codec) == 0, f"cut at byte {cut}"
