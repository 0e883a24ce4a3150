"""Keys (issue 7): a list of keys, `rotate()`, an altered frame told apart from a wrong key, a clear error without
`cryptography`, and key material nowhere but in the caller's hands."""

from __future__ import annotations

import base64
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from conversation_codec import (
    CodecError,
    ConversationCodec,
    CorruptFileError,
    DecryptionError,
    UnencryptedFileError,
)
from conversation_codec import files as files_module
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

OLD = Fernet.generate_key()
NEW = Fernet.generate_key()
OTHER = Fernet.generate_key()


def message(i: int) -> dict[str, Any]:
    return {"role": ("user", "assistant")[i % 2], "content": f"message {i} " + "x" * (i % 7), "i": i}


def snapshot(folder: Path) -> list[tuple[str, bytes]]:
    return sorted((p.name, p.read_bytes()) for p in folder.iterdir())


@pytest.fixture(params=[False, True], ids=["fernet", "gzip+fernet"])
def compressed(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def written(path: Path, key: Any, compressed: bool, *, saved: int = 3000, turns: int = 3) -> list[Any]:
    """A conversation of several frames: a save, then turns appended (one of them of two messages)."""
    codec = ConversationCodec(path, fernet_key=key, compressed=compressed)
    messages = [message(i) for i in range(saved)]
    codec.save(messages)
    for i in range(saved, saved + turns):
        turn = [message(i), message(-i)] if i % 2 else message(i)
        codec.append_turn(turn)
        messages += turn if isinstance(turn, list) else [turn]
    return messages


# ---------------------------------------------------------------------------------------------- a list of keys


def test_a_list_of_keys_encrypts_with_the_first_and_decrypts_with_any(tmp_path: Path, compressed: bool) -> None:
    path = tmp_path / "c.jsonl"
    messages = written(path, OLD, compressed)
    both = ConversationCodec(path, fernet_key=[NEW, OLD], compressed=compressed)
    assert both.load() == messages
    assert len(both) == len(messages)
    both.append_turn(message(-1))  # sealed under NEW, in a file of OLD's frames
    assert ConversationCodec(path, fernet_key=[OLD, NEW]).load() == [*messages, message(-1)]
    with pytest.raises(CorruptFileError) as info:  # OLD alone opens every frame but the new one
        ConversationCodec(path, fernet_key=OLD).load()
    assert info.value.offset == os.path.getsize(path) - len(path.read_bytes().splitlines(keepends=True)[-1])


@pytest.mark.parametrize("form", ["bytes", "str", "tuple", "Fernet objects"])
def test_key_list_forms(tmp_path: Path, form: str) -> None:
    keys: Any = {
        "bytes": [NEW, OLD],
        "str": [NEW.decode(), OLD.decode()],
        "tuple": (NEW, OLD),
        "Fernet objects": [Fernet(NEW), OLD],
    }[form]
    path = tmp_path / "c.jsonl"
    ConversationCodec(path, fernet_key=keys).save([message(0)])
    assert ConversationCodec(path, fernet_key=NEW).load() == [message(0)]
    with pytest.raises(DecryptionError):
        ConversationCodec(path, fernet_key=OLD).load()


@pytest.mark.parametrize(
    ("key", "error", "says"),
    [
        ([], ValueError, "empty list"),
        ([NEW, b"not a key"], ValueError, "fernet_key[1] is not a Fernet key"),
        (b"A" * 42 + b"!", ValueError, "fernet_key is not a Fernet key"),  # not base64 (43 "A"s are, from 3.15)
        ([NEW, 12], TypeError, "fernet_key[1] must be a key"),
        (12, TypeError, "fernet_key must be a key"),
    ],
)
def test_a_bad_key_is_named_by_its_place_never_shown(tmp_path: Path, key: Any, error: type, says: str) -> None:
    with pytest.raises(error) as info:
        ConversationCodec(tmp_path / "c.jsonl", fernet_key=key)
    assert says in str(info.value)
    assert info.value.__cause__ is None and (info.value.__context__ is None or info.value.__suppress_context__)
    assert "not a key" not in str(info.value) and "AAAA" not in str(info.value)


# ------------------------------------------------------------------------------------------------------ rotate


def test_rotate_reencrypts_every_frame_under_the_first_key(tmp_path: Path, compressed: bool) -> None:
    path = tmp_path / "c.jsonl"
    messages = written(path, OLD, compressed)
    codec = ConversationCodec(path, fernet_key=[NEW, OLD], compressed=compressed)
    codec.rotate()
    for reader in (ConversationCodec(path, fernet_key=NEW), codec):
        assert reader.load() == messages
        assert len(reader) == len(messages)
        assert reader.load(last=3) == messages[-3:]
        assert reader.verify().ok
    old = ConversationCodec(path, fernet_key=OLD)
    for read in (old.load, old.__len__, lambda: old.load(last=2), lambda: list(old)):
        with pytest.raises(DecryptionError) as info:
            read()
        assert not isinstance(info.value, CorruptFileError)
    codec.append_turn(message(-2))  # the codec goes on after its rotation
    assert ConversationCodec(path, fernet_key=NEW).load() == [*messages, message(-2)]


def test_rotate_rewrites_in_the_codecs_format(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    messages = written(path, OLD, compressed=False)
    ConversationCodec(path, fernet_key=[NEW, OLD], compressed=True).rotate()
    plaintext = Fernet(NEW).decrypt(path.read_bytes().splitlines()[0])
    assert plaintext[32:34] == b"\x1f\x8b"  # after the 32-byte frame header: a gzip member
    assert ConversationCodec(path, fernet_key=NEW).load() == messages


def test_rotate_with_a_key_that_opens_nothing_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    written(path, OLD, compressed=False)
    before = snapshot(tmp_path)
    with pytest.raises(DecryptionError):
        ConversationCodec(path, fernet_key=[NEW, OTHER]).rotate()
    assert snapshot(tmp_path) == before


def test_rotate_refuses_what_is_not_its_to_rotate(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    ConversationCodec(path).save([message(0)])
    before = snapshot(tmp_path)
    with pytest.raises(UnencryptedFileError, match=r"\.encrypt\(\)"):
        ConversationCodec(path, fernet_key=NEW).rotate()
    with pytest.raises(ValueError, match="needs a codec with a fernet_key"):
        ConversationCodec(path).rotate()
    assert snapshot(tmp_path) == before
    missing = tmp_path / "missing.jsonl"
    ConversationCodec(missing, fernet_key=NEW).rotate()
    assert not missing.exists()


def test_rotate_sets_a_torn_tail_aside(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    messages = written(path, OLD, compressed=False)
    torn = Fernet(OLD).encrypt(b"x" * 100)[:70]
    with path.open("ab") as f:
        f.write(torn)
    ConversationCodec(path, fernet_key=[NEW, OLD]).rotate()
    assert ConversationCodec(path, fernet_key=NEW).load() == messages
    (side,) = tmp_path.glob("c.jsonl.torn-*")
    assert side.read_bytes() == torn


def test_a_rotation_that_fails_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.jsonl"
    messages = written(path, OLD, compressed=False)
    before = snapshot(tmp_path)

    def failing_flush(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(files_module, "flush", failing_flush)  # the new file's data never reaches the disk
    with pytest.raises(OSError, match="Input/output"):
        ConversationCodec(path, fernet_key=[NEW, OLD]).rotate()
    monkeypatch.undo()
    assert [(n, b) for n, b in snapshot(tmp_path) if not n.endswith(".tmp")] == before
    assert ConversationCodec(path, fernet_key=OLD).load() == messages


_ROTATOR = textwrap.dedent(
    """
    import sys
    from conversation_codec import ConversationCodec
    sys.stdout.write("ready\\n"); sys.stdout.flush()
    ConversationCodec(sys.argv[1], fernet_key=[sys.argv[2].encode(), sys.argv[3].encode()]).rotate()
    sys.stdout.write("done\\n"); sys.stdout.flush()
    """
)


def test_a_rotation_killed_at_any_moment_leaves_the_old_file_or_the_new_one(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    messages = written(path, OLD, compressed=True, saved=60_000, turns=2)
    old_bytes = path.read_bytes()
    outcomes = {"old": 0, "new": 0}
    for delay in (0.0, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0, 1.5):
        child = subprocess.Popen(
            [sys.executable, "-c", _ROTATOR, str(path), NEW.decode(), OLD.decode()], stdout=subprocess.PIPE
        )
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a rotation leaves no torn tail
            outcome = "old" if path.read_bytes() == old_bytes else "new"
            assert ConversationCodec(path, fernet_key=[NEW, OLD]).load() == messages
            assert ConversationCodec(path, fernet_key=[NEW, OLD]).verify().ok
        if outcome == "new":
            with pytest.raises(DecryptionError):
                ConversationCodec(path, fernet_key=OLD).load()
            path.write_bytes(old_bytes)  # start again from the old file
            (tmp_path / "c.jsonl.idx").unlink(missing_ok=True)
        outcomes[outcome] += 1
    assert sum(outcomes.values()) == 10


# ------------------------------------------------------------------- an altered frame is not a wrong key


def altered(path: Path, frame: int) -> int:
    """Changes one base64 character in the middle of the `frame`-th line (still a well-formed token); returns the
    frame's offset."""
    lines = path.read_bytes().splitlines(keepends=True)
    line = bytearray(lines[frame])
    middle = len(line) // 2
    line[middle] = ord("B") if line[middle] != ord("B") else ord("C")
    lines[frame] = bytes(line)
    path.write_bytes(b"".join(lines))
    return sum(len(x) for x in lines[:frame])


@pytest.mark.parametrize("frame", [0, 1, -1])
def test_an_altered_frame_under_the_right_key_is_corruption_naming_the_frame(
    tmp_path: Path, compressed: bool, frame: int
) -> None:
    path = tmp_path / "c.jsonl"
    written(path, NEW, compressed, saved=3, turns=3)
    count = len(path.read_bytes().splitlines())
    offset = altered(path, frame % count)
    codec = ConversationCodec(path, fernet_key=NEW)
    readers = [codec.load, lambda: list(codec), lambda: codec.load(last=100)]
    if frame == -1:  # len() and load(last=1) read the last frame only
        readers += [codec.__len__, lambda: codec.load(last=1)]
    for read in readers:
        with pytest.raises(CorruptFileError) as info:
            read()
        assert info.value.offset == offset
        assert f"at byte {offset}" in str(info.value) and "altered" in str(info.value)
    report = codec.verify()
    assert not report.ok
    assert [(at, "altered" in what) for at, what in report.errors] == [(offset, True)]
    if frame == -1:
        with pytest.raises(CorruptFileError):
            codec.append_turn(message(-1))
    with pytest.raises(DecryptionError) as wrong:  # the same file under a wrong key is a wrong key
        ConversationCodec(path, fernet_key=OTHER).load()
    assert not isinstance(wrong.value, CorruptFileError) and "wrong key" in str(wrong.value)


def test_the_only_frame_altered_cannot_be_told_from_a_wrong_key(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    ConversationCodec(path, fernet_key=NEW).save([message(0)])
    altered(path, 0)
    with pytest.raises(DecryptionError, match="wrong key, or the frame was altered") as info:
        ConversationCodec(path, fernet_key=NEW).load()
    assert isinstance(info.value, InvalidToken)


def test_repair_keeps_the_frames_around_an_altered_one(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    codec = ConversationCodec(path, fernet_key=NEW)
    for i in range(3):
        codec.append_turn(message(i))
    original = path.read_bytes()
    altered(path, 1)
    damaged = path.read_bytes()
    assert ConversationCodec(path, fernet_key=NEW).repair() == [f"{path}.damaged"]
    assert Path(f"{path}.damaged").read_bytes() == damaged != original
    assert ConversationCodec(path, fernet_key=NEW).load() == [message(0), message(2)]


# ---------------------------------------------------------------------------- no key, or no cryptography


def test_an_encrypted_file_read_without_a_key_says_to_pass_one(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    ConversationCodec(path, fernet_key=NEW).save([message(0)])
    plain = ConversationCodec(path)
    for read in (plain.load, plain.__len__, lambda: list(plain)):
        with pytest.raises(DecryptionError, match=r"encrypted\); pass fernet_key= to read it"):
            read()


def test_without_cryptography_the_error_names_the_extra(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    ConversationCodec(path, fernet_key=NEW).save([message(0)])
    script = textwrap.dedent(
        """
        import sys
        sys.modules["cryptography"] = None  # as if it were not installed
        from conversation_codec import ConversationCodec, DecryptionError
        try:
            ConversationCodec(sys.argv[1], fernet_key=sys.argv[2].encode())
        except ImportError as exc:
            assert exc.__cause__ is None and exc.__suppress_context__, "chained"
            print(exc)
        try:
            ConversationCodec(sys.argv[1]).load()
        except DecryptionError as exc:
            print(exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(path), NEW.decode()], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0] == 'fernet_key needs the cryptography package: pip install "conversation-codec[crypto]"'
    assert "pass fernet_key= to read it" in out[1]


# ----------------------------------------------------------------------------- key material stays secret


def secrets_of(key: bytes) -> list[bytes]:
    raw = base64.urlsafe_b64decode(key)
    return [key, raw, raw[:16], raw[16:], key.rstrip(b"=")]


def test_key_material_is_in_no_file_error_repr_or_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "c.jsonl"
    texts: list[str] = []

    def attempt(action: Any) -> None:
        try:
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                action()
            texts.extend(str(w.message) for w in seen)
        except (CodecError, OSError, ValueError, TypeError) as exc:
            chain: BaseException | None = exc
            while chain is not None:
                texts.extend([str(chain), repr(chain), *map(str, chain.args)])
                chain = chain.__cause__ or chain.__context__

    keyed = ConversationCodec(path, fernet_key=[NEW, OLD], compressed=True)
    texts += [repr(keyed), str(keyed), repr(ConversationCodec(path, fernet_key=MultiFernet([Fernet(NEW)])))]
    attempt(lambda: keyed.save([message(i) for i in range(2000)]))
    attempt(lambda: keyed.append_turn([message(1), message(2)]))
    with path.open("ab") as f:
        f.write(b"gAAAAA-torn")
    attempt(lambda: ConversationCodec(path, fernet_key=NEW).load())
    attempt(lambda: keyed.append_turn(message(3)))  # sets the torn tail aside
    attempt(lambda: ConversationCodec(path, fernet_key=OTHER).load())
    attempt(lambda: ConversationCodec(path, fernet_key=OTHER).append_turn(message(4)))
    attempt(lambda: ConversationCodec(path, fernet_key=[OTHER]).rotate())
    attempt(lambda: ConversationCodec(path).load())
    attempt(lambda: ConversationCodec(path, fernet_key=NEW + b"x"))
    attempt(lambda: ConversationCodec(path, fernet_key=[NEW[:-2]]))
    keyed.append_turn(message(5))
    altered(path, 1)
    attempt(lambda: ConversationCodec(path, fernet_key=OTHER).load())
    attempt(lambda: texts.append(repr(ConversationCodec(path, fernet_key=OTHER).verify())))
    attempt(lambda: texts.append(repr(ConversationCodec(path, fernet_key=OTHER).repair())))
    attempt(lambda: texts.append(repr(keyed.verify())))
    attempt(lambda: texts.append(repr(keyed.repair())))
    texts += [record.getMessage() for record in caplog.records]
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert len(texts) > 10 and any("altered" in t for t in texts) and any("wrong key" in t for t in texts)
    everything = "\n".join(texts).encode("utf-8", "surrogateescape")
    for key in (NEW, OLD, OTHER):
        for secret in secrets_of(key):
            for place, haystack in (("a file", stored), ("a message", everything)):
                assert secret not in haystack, f"key material in {place}"
                if secret is not key and b"=" not in secret:
                    assert secret.hex().encode() not in haystack
                    assert repr(secret).encode() not in haystack
