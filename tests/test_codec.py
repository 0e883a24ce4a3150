"""The original design's behaviours, which this package must keep exactly (it is a drop-in)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from _helpers import assert_same, folder_listing, reference
from conversation_codec import ConversationCodec


def test_missing_file_loads_as_empty(conv_path: Path) -> None:
    assert ConversationCodec(conv_path).load() == []
    assert not conv_path.exists(), "load() must not create the file"


def test_missing_folder_loads_as_empty(tmp_path: Path) -> None:
    assert ConversationCodec(tmp_path / "no" / "such" / "dir" / "c.jsonl").load() == []


def test_empty_file_loads_as_empty(conv_path: Path) -> None:
    conv_path.write_bytes(b"")
    assert ConversationCodec(conv_path).load() == []


@pytest.mark.parametrize("blank", [b"\n", b"\n\n\n", b"   \n\t\n", b"\r\n\r\n", b" ", b"\t \r\n  "])
def test_whitespace_only_file_loads_as_empty(conv_path: Path, blank: bytes) -> None:
    conv_path.write_bytes(blank)
    assert ConversationCodec(conv_path).load() == []


def test_load_returns_a_list(conv_path: Path, conversation: list[Any]) -> None:
    codec = ConversationCodec(conv_path)
    codec.save(conversation)
    assert type(codec.load()) is list


def test_round_trip_realistic_conversation(conv_path: Path, conversation: list[Any]) -> None:
    ConversationCodec(conv_path).save(conversation)
    loaded = ConversationCodec(conv_path).load()  # a fresh codec: nothing is cached in the object
    assert_same(loaded, reference(conversation))
    assert loaded == conversation


def test_save_empty_conversation(conv_path: Path, conversation: list[Any]) -> None:
    codec = ConversationCodec(conv_path)
    codec.save(conversation)
    codec.save([])
    assert conv_path.exists()
    assert codec.load() == []


def test_one_line_per_message(conv_path: Path, conversation: list[Any]) -> None:
    ConversationCodec(conv_path).save(conversation)
    data = conv_path.read_bytes()
    assert data.endswith(b"\n")
    lines = data.split(b"\n")[:-1]
    assert len(lines) == len(conversation)
    for line, message in zip(lines, conversation):
        assert json.loads(line) == message


@pytest.mark.parametrize("kind", ["str", "path", "relative str"])
@pytest.mark.parametrize("keyword", [False, True])
def test_path_types_and_passing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, conversation: list[Any], kind: str, keyword: bool
) -> None:
    monkeypatch.chdir(tmp_path)
    target = {"str": str(tmp_path / "c.jsonl"), "path": tmp_path / "c.jsonl", "relative str": "c.jsonl"}[kind]
    codec = ConversationCodec(path=target) if keyword else ConversationCodec(target)
    assert isinstance(codec.path, Path)
    assert codec.path == Path(target)
    codec.save(conversation)
    assert (tmp_path / "c.jsonl").exists()
    assert ConversationCodec(tmp_path / "c.jsonl").load() == conversation


def test_path_accepts_os_pathlike(tmp_path: Path, conversation: list[Any]) -> None:
    class MyPath:
        def __fspath__(self) -> str:
            return str(tmp_path / "c.jsonl")

    codec = ConversationCodec(MyPath())
    assert codec.path == tmp_path / "c.jsonl"
    codec.save(conversation)
    assert codec.load() == conversation


def test_save_rewrites_whole_file(conv_path: Path, conversation: list[Any]) -> None:
    codec = ConversationCodec(conv_path)
    codec.save(conversation)
    big_size = conv_path.stat().st_size
    codec.save(conversation[:2])
    assert codec.load() == conversation[:2]
    assert conv_path.stat().st_size < big_size
    # Nothing of the longer, older conversation survives past the new end.
    assert conv_path.read_bytes().count(b"\n") == 2


def test_redact_called_once_per_message_in_order(conv_path: Path, conversation: list[Any]) -> None:
    seen: list[Any] = []

    def redact(message: Any) -> Any:
        seen.append(message)
        return message

    ConversationCodec(conv_path, redact=redact).save(conversation)
    assert len(seen) == len(conversation)
    assert all(s is m for s, m in zip(seen, conversation))


def test_redact_output_is_what_is_stored(conv_path: Path) -> None:
    secret = "sk-live-TOPSECRET-4242"
    messages = [
        {"role": "user", "content": f"my key is {secret}"},
        {"role": "assistant", "content": "noted", "tool_calls": [{"arguments": f'{{"key": "{secret}"}}'}]},
        {"role": "user", "content": "thanks"},
    ]

    def redact(message: dict[str, Any]) -> dict[str, Any]:
        return json.loads(json.dumps(message).replace(secret, "[REDACTED]"))

    codec = ConversationCodec(conv_path, redact=redact)
    codec.save(messages)
    raw = conv_path.read_bytes()
    assert secret.encode() not in raw
    assert b"[REDACTED]" in raw
    # load() gives back what was stored, redacted; redact is not applied on the way in.
    assert codec.load() == [redact(m) for m in messages]
    # The caller's messages are not modified.
    assert secret in messages[0]["content"]


def test_redact_positional_like_the_original(conv_path: Path) -> None:
    codec = ConversationCodec(conv_path, lambda m: {"n": m["n"] * 2})
    codec.save([{"n": 1}, {"n": 2}])
    assert codec.load() == [{"n": 2}, {"n": 4}]


def test_redact_may_change_the_message_type(conv_path: Path) -> None:
    codec = ConversationCodec(conv_path, redact=lambda m: [m["role"], len(m["content"])])
    codec.save([{"role": "user", "content": "hello"}])
    assert codec.load() == [["user", 5]]


@pytest.mark.parametrize("container", ["tuple", "generator", "iterator", "dict_values", "list subclass"])
def test_save_accepts_any_iterable(conv_path: Path, conversation: list[Any], container: str) -> None:
    class MyList(list):  # type: ignore[type-arg]
        pass

    make = {
        "tuple": tuple,
        "generator": lambda c: (m for m in c),
        "iterator": iter,
        "dict_values": lambda c: dict(enumerate(c)).values(),
        "list subclass": MyList,
    }[container]
    codec = ConversationCodec(conv_path)
    codec.save(make(conversation))
    assert codec.load() == conversation


def test_generator_with_redact(conv_path: Path) -> None:
    calls = []

    def redact(m: Any) -> Any:
        calls.append(m)
        return {"i": m["i"], "redacted": True}

    codec = ConversationCodec(conv_path, redact=redact)
    codec.save({"i": i} for i in range(5))
    assert len(calls) == 5
    assert codec.load() == [{"i": i, "redacted": True} for i in range(5)]


def test_save_creates_missing_parent_folders(tmp_path: Path, conversation: list[Any], umask_022: None) -> None:
    path = tmp_path / "sessions" / "users" / "user-123.jsonl"
    codec = ConversationCodec(path)
    codec.save(conversation)
    assert path.is_file()
    assert codec.load() == conversation
    # Every folder made to hold the conversation is private too, not only the last one (Path.mkdir's
    # parents=True gives the mode to the last folder alone).
    for folder in (path.parent, path.parent.parent):
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700, folder


def test_new_file_mode_is_0600(conv_path: Path, conversation: list[Any], umask_022: None) -> None:
    ConversationCodec(conv_path).save(conversation)
    assert stat.S_IMODE(os.stat(conv_path).st_mode) == 0o600


def test_new_file_mode_is_0600_with_permissive_umask(conv_path: Path, conversation: list[Any]) -> None:
    old = os.umask(0)
    try:
        ConversationCodec(conv_path).save(conversation)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(conv_path).st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o600, 0o660])
def test_existing_file_mode_preserved(conv_path: Path, conversation: list[Any], umask_022: None, mode: int) -> None:
    conv_path.write_text("")
    os.chmod(conv_path, mode)
    codec = ConversationCodec(conv_path)
    codec.save(conversation)
    assert stat.S_IMODE(os.stat(conv_path).st_mode) == mode
    codec.save(conversation[:1])
    assert stat.S_IMODE(os.stat(conv_path).st_mode) == mode
    assert codec.load() == conversation[:1]


def test_durable_false_writes_correctly(conv_path: Path, conversation: list[Any], umask_022: None) -> None:
    codec = ConversationCodec(conv_path, durable=False)
    codec.save(conversation)
    assert codec.load() == conversation
    assert ConversationCodec(conv_path).load() == conversation
    codec.save(conversation[3:])
    assert ConversationCodec(conv_path).load() == conversation[3:]
    assert stat.S_IMODE(os.stat(conv_path).st_mode) == 0o600
    assert folder_listing(conv_path) == [conv_path.name]


def test_no_temporary_file_left_after_save(conv_path: Path, conversation: list[Any]) -> None:
    codec = ConversationCodec(conv_path)
    for _ in range(3):
        codec.save(conversation)
    assert folder_listing(conv_path) == [conv_path.name]


@pytest.mark.parametrize(
    "message",
    [
        [1, "two", 3.0, None, True, {"k": []}],
        [],
        "just a string",
        "",
        0,
        -7,
        10**30,
        3.25,
        -0.0,
        1e300,
        None,
        True,
        False,
        {},
    ],
    ids=repr,
)
def test_any_json_value_is_a_message(conv_path: Path, message: Any) -> None:
    codec = ConversationCodec(conv_path)
    codec.save([message, message])
    assert_same(codec.load(), [reference(message), reference(message)])


def test_mixed_message_types(conv_path: Path, conversation: list[Any]) -> None:
    messages = [*conversation, "note", 42, None, [1, 2], False, 2.5]
    codec = ConversationCodec(conv_path)
    codec.save(messages)
    assert_same(codec.load(), reference(messages))


def test_repr_names_the_path(conv_path: Path) -> None:
    assert str(conv_path) in repr(ConversationCodec(conv_path))


def test_the_version_is_the_one_the_package_metadata_gives() -> None:
    # One version, defined in Cargo.toml: the wheel's metadata (maturin) and the core's __version__ agree.
    from importlib.metadata import version

    import conversation_codec

    assert conversation_codec.__version__ == version("conversation-codec")
    assert conversation_codec.__version__.count(".") == 2
