"""Every error the package raises: its classes, its message, and that a failed save leaves the file untouched."""

from __future__ import annotations

import decimal
import pickle
import sys
from pathlib import Path
from typing import Any

import conversation_codec
import pytest
from _helpers import folder_listing
from conversation_codec import (
    CodecError,
    ConversationCodec,
    CorruptFileError,
    DecodeError,
    DecryptionError,
    EncodeError,
    FormatMismatchError,
    TornTailWarning,
    UnencryptedFileError,
)

# ------------------------------------------------------------------------------------------- classes


def test_exception_classes_are_exported() -> None:
    for cls in (CodecError, DecodeError, DecryptionError, EncodeError, FormatMismatchError):
        assert getattr(conversation_codec, cls.__name__) is cls
        assert cls.__name__ in conversation_codec.__all__
        assert issubclass(cls, CodecError)


def test_class_hierarchy_matches_what_the_original_raised() -> None:
    assert issubclass(DecodeError, ValueError)  # json.JSONDecodeError is a ValueError
    assert issubclass(EncodeError, TypeError)  # "... is not JSON serializable"
    assert issubclass(EncodeError, ValueError)  # "Circular reference detected"
    # Every error for unreadable data is a ValueError, as the original's json and cryptography errors were.
    assert issubclass(CodecError, ValueError)
    assert not issubclass(CodecError, TypeError)
    for cls in (CorruptFileError, DecryptionError, FormatMismatchError, UnencryptedFileError):
        assert issubclass(cls, CodecError)


# ------------------------------------------------------------------------------------------- decode


def write_lines(path: Path, data: bytes) -> ConversationCodec:
    path.write_bytes(data)
    return ConversationCodec(path)


def test_decode_error_names_file_and_line(conv_path: Path) -> None:
    codec = write_lines(conv_path, b'{"a": 1}\n{"a": }\n{"a": 3}\n')
    with pytest.raises(DecodeError) as info:
        codec.load()
    err = info.value
    assert isinstance(err, CodecError)
    assert isinstance(err, ValueError)
    assert err.lineno == 2
    assert err.source == str(conv_path)
    assert str(conv_path) in str(err)
    assert "line 2" in str(err)
    assert 1 <= err.colno <= len(b'{"a": }') + 1
    assert err.reason and err.reason in str(err)


def test_decode_error_caught_as_value_error(conv_path: Path) -> None:
    codec = write_lines(conv_path, b"{nope}\n")
    with pytest.raises(ValueError):
        codec.load()


def test_decode_error_pickles(conv_path: Path) -> None:
    codec = write_lines(conv_path, b"[1]\n[2,,]\n")
    with pytest.raises(DecodeError) as info:
        codec.load()
    err = pickle.loads(pickle.dumps(info.value))
    assert type(err) is DecodeError
    assert (err.source, err.lineno, err.colno, err.reason) == (
        info.value.source,
        info.value.lineno,
        info.value.colno,
        info.value.reason,
    )
    assert str(err) == str(info.value)


@pytest.mark.parametrize(
    ("data", "lineno"),
    [
        (b"\n\n[1, 2\n", 3),
        (b"[1]\n\n\n  \n\t\nnull\n\n{]\n", 8),
        (b"\r\n[1]\r\n\r\n{]\r\n", 4),
        (b"[1]\n[2]\n[3] [4]\n", 3),  # two documents on one line
        (b'{"a": 1}\n{"a": 1}}\n', 2),  # trailing garbage
        (b"[1]\n\x00\n", 2),
        (b'[1]\n"a\tb"\n', 2),  # raw control character in a string
    ],
)
def test_blank_lines_skipped_but_counted(conv_path: Path, data: bytes, lineno: int) -> None:
    with pytest.raises(DecodeError) as info:
        write_lines(conv_path, data).load()
    assert info.value.lineno == lineno
    assert f"line {lineno}" in str(info.value)


def test_blank_lines_between_messages_are_skipped(conv_path: Path) -> None:
    codec = write_lines(conv_path, b'\n\n{"a": 1}\n   \n\t\n{"b": 2}\r\n\r\n\n')
    assert codec.load() == [{"a": 1}, {"b": 2}]


def test_truncated_last_line(conv_path: Path) -> None:
    # A writer that crashed mid-line: the cut line was never acknowledged. Readers leave it out and say so; the
    # next save keeps it in a side file.
    messages = [{"role": "user", "content": f"message {i} " + "x" * 50} for i in range(5)]
    codec = ConversationCodec(conv_path)
    codec.save(messages)
    data = conv_path.read_bytes()
    conv_path.write_bytes(data[: len(data) - 20])
    with pytest.warns(TornTailWarning, match=f"from byte {data.rindex(b'{')}"):
        assert codec.load() == messages[:4]
    with pytest.warns(TornTailWarning):
        assert len(codec) == 4
    codec.save(messages[:2])
    assert (conv_path.parent / f"{conv_path.name}.torn-{data.rindex(b'{')}").read_bytes() == data[
        data.rindex(b"{") : len(data) - 20
    ]


@pytest.mark.parametrize(
    "bad",
    [b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\x80"],
    ids=lambda b: b.hex(),
)
@pytest.mark.parametrize("where", ["in a string", "in a key", "outside strings"])
def test_invalid_utf8_names_its_line(conv_path: Path, bad: bytes, where: str) -> None:
    line = {
        "in a string": b'{"text": "caf' + bad + b'"}',
        "in a key": b'{"k' + bad + b'": 1}',
        "outside strings": b"[1, " + bad + b"]",
    }[where]
    with pytest.raises(DecodeError) as info:
        write_lines(conv_path, b'{"a": 1}\n["b"]\n' + line + b"\n[4]\n").load()
    assert info.value.lineno == 3
    assert "line 3" in str(info.value)


def test_utf8_bom_at_start_is_skipped(conv_path: Path) -> None:
    codec = write_lines(conv_path, b'\xef\xbb\xbf{"a": 1}\n[2]\n')
    assert codec.load() == [{"a": 1}, [2]]


def test_utf8_bom_elsewhere_is_an_error(conv_path: Path) -> None:
    with pytest.raises(DecodeError) as info:
        write_lines(conv_path, b'{"a": 1}\n\xef\xbb\xbf[2]\n').load()
    assert info.value.lineno == 2


# ------------------------------------------------------------------------------------------- encode


@pytest.fixture
def saved(conv_path: Path) -> tuple[ConversationCodec, bytes]:
    """A codec whose file already holds a conversation, and that file's bytes."""
    codec = ConversationCodec(conv_path)
    codec.save([{"role": "user", "content": "the conversation before the failed save"}, [1, 2]])
    return codec, conv_path.read_bytes()


def assert_untouched(codec: ConversationCodec, before: bytes) -> None:
    assert codec.path.read_bytes() == before
    assert folder_listing(codec.path) == [codec.path.name], "a temporary file was left behind"


def test_unserializable_value_names_message_and_key_path(saved: tuple[ConversationCodec, bytes]) -> None:
    codec, before = saved
    messages = [{"a": 1}, {"b": 2}, {"c": 3}, {"role": "user", "content": [{"type": "image", "data": b"\x00"}]}]
    with pytest.raises(TypeError) as info:
        codec.save(messages)
    err = info.value
    assert isinstance(err, CodecError)
    assert isinstance(err, EncodeError)
    assert 'messages[3]["content"][0]["data"]: bytes is not JSON serializable' in str(err)
    assert_untouched(codec, before)


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        ({1, 2}, "set"),
        (frozenset(), "frozenset"),
        (object(), "object"),
        (decimal.Decimal("1.5"), "Decimal"),
        (1 + 2j, "complex"),
        (bytearray(b"x"), "bytearray"),
        (Path("/tmp"), "PosixPath"),
    ],
    ids=lambda v: type(v).__name__,
)
def test_unserializable_types(saved: tuple[ConversationCodec, bytes], value: Any, type_name: str) -> None:
    codec, before = saved
    with pytest.raises(EncodeError) as info:
        codec.save([{"ok": True}, ["x", {"v": value}]])
    assert isinstance(info.value, TypeError)
    assert 'messages[1][1]["v"]' in str(info.value)
    assert f"{type_name} is not JSON serializable" in str(info.value)
    assert_untouched(codec, before)


def test_unserializable_top_level_message(saved: tuple[ConversationCodec, bytes]) -> None:
    codec, before = saved
    with pytest.raises(EncodeError) as info:
        codec.save([{}, {}, b"raw"])
    assert "messages[2]: bytes is not JSON serializable" in str(info.value)
    assert_untouched(codec, before)


@pytest.mark.parametrize("key", [(1, 2), b"k", frozenset({1})], ids=lambda k: type(k).__name__)
def test_unsupported_key_type(saved: tuple[ConversationCodec, bytes], key: Any) -> None:
    codec, before = saved
    with pytest.raises(EncodeError) as info:
        codec.save([{"ok": 1}, {"content": {key: "v"}}])
    err = info.value
    assert isinstance(err, TypeError)  # the stdlib: "keys must be str, int, float, bool or None"
    assert 'messages[1]["content"]' in str(err)
    assert type(key).__name__ in str(err)
    assert_untouched(codec, before)


def test_encode_error_pickles(saved: tuple[ConversationCodec, bytes]) -> None:
    codec, _ = saved
    with pytest.raises(EncodeError) as info:
        codec.save([{"x": {1, 2}}])
    err = pickle.loads(pickle.dumps(info.value))
    assert type(err) is EncodeError
    assert (err.where, err.reason, str(err)) == (info.value.where, info.value.reason, str(info.value))


def test_redact_exception_propagates_unchanged(saved: tuple[ConversationCodec, bytes]) -> None:
    codec, before = saved

    class Boom(Exception):
        pass

    boom = Boom("redactor failed")
    calls = []

    def redact(message: Any) -> Any:
        calls.append(message)
        if len(calls) == 3:
            raise boom
        return message

    failing = ConversationCodec(codec.path, redact=redact)
    with pytest.raises(Boom) as info:
        failing.save([{"i": i} for i in range(5)])
    assert info.value is boom
    assert not isinstance(info.value, CodecError)
    assert_untouched(codec, before)


def test_iterator_exception_propagates_unchanged(saved: tuple[ConversationCodec, bytes]) -> None:
    codec, before = saved
    boom = RuntimeError("the message source failed")

    def messages() -> Any:
        yield {"a": 1}
        yield {"b": 2}
        raise boom

    with pytest.raises(RuntimeError) as info:
        codec.save(messages())
    assert info.value is boom
    assert_untouched(codec, before)


def _big(count: int = 4000) -> list[Any]:
    # ~14 MB of JSONL: more than one block of the streaming writer (4 MiB), so the pipelined path runs and the
    # failure below happens after earlier blocks were already written to the temporary file.
    return [{"role": "user", "i": i, "content": "é中😀 lorem ipsum " * 200} for i in range(count)]


@pytest.mark.parametrize("failure", ["unserializable", "redact raises", "iterator raises", "circular"])
def test_late_failure_in_a_large_save_leaves_the_old_file(saved: tuple[ConversationCodec, bytes], failure: str) -> None:
    codec, before = saved
    messages = _big()
    boom = ArithmeticError("late failure")

    def redact(m: Any) -> Any:
        if m["i"] == len(messages) - 1:
            raise boom
        return m

    def generate() -> Any:
        yield from messages
        raise boom

    cyclic: list[Any] = []
    cyclic.append(cyclic)
    if failure == "unserializable":
        with pytest.raises(EncodeError) as info:
            codec.save([*messages, {"x": {1j}}])
        assert f'messages[{len(messages)}]["x"]: set is not JSON serializable' in str(info.value)
    elif failure == "circular":
        with pytest.raises(EncodeError):
            codec.save([*messages, {"loop": cyclic}])
    elif failure == "redact raises":
        with pytest.raises(ArithmeticError) as exc:
            ConversationCodec(codec.path, redact=redact).save(messages)
        assert exc.value is boom
    else:
        with pytest.raises(ArithmeticError) as exc:
            codec.save(generate())
        assert exc.value is boom
    assert_untouched(codec, before)


def test_decode_error_inside_an_encrypted_file(conv_path: Path, fernet_key: bytes) -> None:
    from cryptography.fernet import Fernet

    conv_path.write_bytes(Fernet(fernet_key).encrypt(b'{"a": 1}\n\n[1, 2,]\n'))
    with pytest.raises(DecodeError) as info:
        ConversationCodec(conv_path, fernet_key=fernet_key).load()
    assert info.value.lineno == 3
    assert str(conv_path) in str(info.value)


def test_exception_from_a_dict_subclass_propagates(saved: tuple[ConversationCodec, bytes]) -> None:
    codec, before = saved

    class Weird(dict):  # type: ignore[type-arg]
        def items(self) -> Any:
            raise KeyError("nope")

        def keys(self) -> Any:
            raise KeyError("nope")

        def __iter__(self) -> Any:
            raise KeyError("nope")

    try:
        codec.save([{"a": Weird(x="1")}])
    except KeyError:
        pass  # the subclass's own error came through
    except CodecError:
        pytest.fail("a Python error raised inside a dict subclass must not become a CodecError")
    else:
        # The core read the dict's storage directly, which is allowed; the data must then be right.
        assert codec.load() == [{"a": {"x": "1"}}]
        return
    assert_untouched(codec, before)


def test_save_not_iterable(saved: tuple[ConversationCodec, bytes]) -> None:
    codec, before = saved
    with pytest.raises(TypeError):
        codec.save(42)  # type: ignore[arg-type]
    assert_untouched(codec, before)


# ------------------------------------------------------------------------------------------- decryption


def test_wrong_key(conv_path: Path, fernet_key: bytes, other_fernet_key: bytes) -> None:
    from cryptography.fernet import InvalidToken

    ConversationCodec(conv_path, fernet_key=fernet_key).save([{"a": 1}])
    with pytest.raises(DecryptionError) as info:
        ConversationCodec(conv_path, fernet_key=other_fernet_key).load()
    assert isinstance(info.value, CodecError)
    assert isinstance(info.value, InvalidToken)  # what the original let through
    assert str(conv_path) in str(info.value)


def test_wrong_key_caught_as_invalid_token(conv_path: Path, fernet_key: bytes, other_fernet_key: bytes) -> None:
    from cryptography.fernet import InvalidToken

    ConversationCodec(conv_path, fernet_key=fernet_key).save([{"a": 1}])
    with pytest.raises(InvalidToken):
        ConversationCodec(conv_path, fernet_key=other_fernet_key).load()


def _flip(data: bytes, index: int) -> bytes:
    # Replace one base64url character with another valid one, so only the content changes, not the alphabet.
    old = data[index : index + 1]
    new = b"B" if old != b"B" else b"C"
    return data[:index] + new + data[index + 1 :]


@pytest.mark.parametrize("where", [0.25, 0.5, 0.9])
def test_tampered_encrypted_file(conv_path: Path, fernet_key: bytes, where: float) -> None:
    codec = ConversationCodec(conv_path, fernet_key=fernet_key)
    codec.save([{"role": "user", "content": "attack at dawn " * 20}])
    data = conv_path.read_bytes()
    conv_path.write_bytes(_flip(data, int(len(data.rstrip()) * where)))
    with pytest.raises(DecryptionError):
        codec.load()


def test_truncated_encrypted_file(conv_path: Path, fernet_key: bytes) -> None:
    codec = ConversationCodec(conv_path, fernet_key=fernet_key)
    codec.save([{"role": "user", "content": "attack at dawn " * 20}])
    data = conv_path.read_bytes()
    conv_path.write_bytes(data[: len(data) // 2])
    with pytest.warns(TornTailWarning, match="from byte 0"):  # a cut token: a write that did not complete
        assert codec.load() == []
    codec.append_turn({"a": 1})  # sets the cut bytes aside first
    assert codec.load() == [{"a": 1}]
    assert (conv_path.parent / f"{conv_path.name}.torn-0").read_bytes() == data[: len(data) // 2]


def test_encrypted_file_without_key(conv_path: Path, fernet_key: bytes) -> None:
    ConversationCodec(conv_path, fernet_key=fernet_key).save([{"a": 1}])
    with pytest.raises(DecryptionError) as info:
        ConversationCodec(conv_path).load()
    assert isinstance(info.value, CodecError)
    assert "key" in str(info.value).lower()
    assert str(conv_path) in str(info.value)


def test_fernet_key_without_cryptography(conv_path: Path, fernet_key: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulate a missing optional dependency: a None entry in sys.modules makes the import fail.
    monkeypatch.setitem(sys.modules, "cryptography.fernet", None)
    with pytest.raises(ImportError) as info:
        ConversationCodec(conv_path, fernet_key=fernet_key)
    assert "pip install" in str(info.value)
    assert "cryptography" in str(info.value)
    # A plain codec needs nothing beyond the standard library.
    plain = ConversationCodec(conv_path)
    plain.save([{"a": 1}])
    assert plain.load() == [{"a": 1}]


@pytest.mark.parametrize("compressed", [False, True])
def test_a_keyed_codec_refuses_unencrypted_data(conv_path: Path, fernet_key: bytes, compressed: bool) -> None:
    # Whoever can replace the file must not be able to slip unauthenticated messages into an encrypted memory.
    ConversationCodec(conv_path, compressed=compressed).save([{"a": 1}, "two", [3]])
    before = conv_path.read_bytes()
    keyed = ConversationCodec(conv_path, fernet_key=fernet_key)
    for attempt in (keyed.load, lambda: keyed.load(last=1), keyed.__len__, lambda: list(keyed)):
        with pytest.raises(UnencryptedFileError, match=r"not encrypted.*\.encrypt\(\)"):
            attempt()
    with pytest.raises(UnencryptedFileError):
        keyed.append_turn({"b": 2})
    assert conv_path.read_bytes() == before
    keyed.encrypt()  # what the error says to do
    assert keyed.load() == [{"a": 1}, "two", [3]]
    assert b"two" not in conv_path.read_bytes()
    keyed.encrypt()  # already encrypted: nothing to do
    assert keyed.load() == [{"a": 1}, "two", [3]]


def test_invalid_key_is_rejected_up_front(conv_path: Path) -> None:
    with pytest.raises(ValueError):  # cryptography: "Fernet key must be 32 url-safe base64-encoded bytes."
        ConversationCodec(conv_path, fernet_key=b"not a key")
