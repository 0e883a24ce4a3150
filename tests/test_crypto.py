"""Fernet encryption (the optional `cryptography` extra): round trips, no plaintext on disk, key forms, rotation."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from _helpers import assert_same, folder_listing, reference
from conversation_codec import ConversationCodec, DecryptionError

fernet = pytest.importorskip("cryptography.fernet")
Fernet, MultiFernet = fernet.Fernet, fernet.MultiFernet

WORD = "Xylophone-Quokka-73"


def test_round_trip(conv_path: Path, fernet_key: bytes, conversation: list[Any]) -> None:
    ConversationCodec(conv_path, fernet_key=fernet_key).save(conversation)
    loaded = ConversationCodec(conv_path, fernet_key=fernet_key).load()
    assert_same(loaded, reference(conversation))


def test_no_plaintext_on_disk(conv_path: Path, fernet_key: bytes) -> None:
    messages = [{"role": "user", "content": f"my password is {WORD}", WORD: [WORD]}]
    ConversationCodec(conv_path, fernet_key=fernet_key).save(messages)
    raw = conv_path.read_bytes()
    assert WORD.encode() not in raw
    assert b"password" not in raw
    assert b"role" not in raw
    # The file is one Fernet token: it decrypts, with the key alone, to the JSONL of the messages.
    plaintext = Fernet(fernet_key).decrypt(raw.strip())
    assert WORD.encode() in plaintext
    assert plaintext.endswith(b"\n")


def test_encrypted_file_mode_is_0600(conv_path: Path, fernet_key: bytes, umask_022: None) -> None:
    ConversationCodec(conv_path, fernet_key=fernet_key).save([{"a": 1}])
    assert stat.S_IMODE(os.stat(conv_path).st_mode) == 0o600
    assert folder_listing(conv_path) == [conv_path.name]


def test_each_save_uses_a_fresh_token(conv_path: Path, fernet_key: bytes) -> None:
    codec = ConversationCodec(conv_path, fernet_key=fernet_key)
    codec.save([{"a": 1}])
    first = conv_path.read_bytes()
    codec.save([{"a": 1}])
    assert conv_path.read_bytes() != first  # Fernet's IV and timestamp differ
    assert codec.load() == [{"a": 1}]


def test_redact_then_encrypt(conv_path: Path, fernet_key: bytes) -> None:
    codec = ConversationCodec(conv_path, redact=lambda m: {**m, "content": "[x]"}, fernet_key=fernet_key)
    codec.save([{"role": "user", "content": WORD}])
    assert WORD.encode() not in Fernet(fernet_key).decrypt(conv_path.read_bytes().strip())
    assert codec.load() == [{"role": "user", "content": "[x]"}]


def test_empty_conversation_encrypted(conv_path: Path, fernet_key: bytes) -> None:
    codec = ConversationCodec(conv_path, fernet_key=fernet_key)
    codec.save([])
    assert conv_path.read_bytes().strip() != b""  # still a token: even the length is not plaintext
    assert codec.load() == []


def test_any_json_value_encrypted(conv_path: Path, fernet_key: bytes) -> None:
    messages = ["s", 1, 2.5, None, True, [1, [2]], {"k": float("nan")}, "\ud800\u2028\x85"]
    codec = ConversationCodec(conv_path, fernet_key=fernet_key)
    codec.save(messages)
    assert_same(codec.load(), reference(messages))


@pytest.mark.parametrize("form", ["bytes", "str", "Fernet", "MultiFernet"])
def test_key_forms(conv_path: Path, fernet_key: bytes, form: str, conversation: list[Any]) -> None:
    key: Any = {
        "bytes": fernet_key,
        "str": fernet_key.decode("ascii"),
        "Fernet": Fernet(fernet_key),
        "MultiFernet": MultiFernet([Fernet(fernet_key)]),
    }[form]
    ConversationCodec(conv_path, fernet_key=key).save(conversation)
    # Any other form of the same key reads it, and so does cryptography itself.
    assert ConversationCodec(conv_path, fernet_key=fernet_key).load() == conversation
    assert ConversationCodec(conv_path, fernet_key=fernet_key.decode()).load() == conversation
    plaintext = Fernet(fernet_key).decrypt(conv_path.read_bytes().strip())
    assert plaintext[:4] == b"\x00CC\x01"  # the frame's header (docs/FORMAT.md), then the JSONL
    assert plaintext[32:].count(b"\n") == len(conversation)


def test_fernet_key_positional_like_the_original(conv_path: Path, fernet_key: bytes) -> None:
    ConversationCodec(conv_path, None, fernet_key).save([{"a": 1}])
    assert b'"a"' not in conv_path.read_bytes()
    assert ConversationCodec(conv_path, fernet_key=fernet_key).load() == [{"a": 1}]
    with pytest.raises(DecryptionError):
        ConversationCodec(conv_path).load()


def test_key_rotation(conv_path: Path, fernet_key: bytes, other_fernet_key: bytes) -> None:
    old, new = fernet_key, other_fernet_key
    ConversationCodec(conv_path, fernet_key=old).save([{"v": 1}])
    rotating = MultiFernet([Fernet(new), Fernet(old)])
    codec = ConversationCodec(conv_path, fernet_key=rotating)
    assert codec.load() == [{"v": 1}]  # a file written with the old key loads
    codec.save([{"v": 2}])  # and is written again with the new (first) key
    assert ConversationCodec(conv_path, fernet_key=new).load() == [{"v": 2}]
    with pytest.raises(DecryptionError):
        ConversationCodec(conv_path, fernet_key=old).load()


def test_large_conversation_encrypted(conv_path: Path, fernet_key: bytes) -> None:
    # ~10 MB: the token spans several read blocks.
    messages = [{"role": "user", "content": base64.b64encode(os.urandom(3000)).decode(), "i": i} for i in range(2500)]
    codec = ConversationCodec(conv_path, fernet_key=fernet_key)
    codec.save(messages)
    assert codec.load() == messages
