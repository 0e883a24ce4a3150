"""append_turn, load(last=n), len() and iter(), and the index behind them, in every format: plain, gzip, Fernet,
gzip inside Fernet.

The index is a cache: every test that damages it checks that results are the same as without it.
"""

from __future__ import annotations

import os
import random
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, ClassVar

import pytest
from _helpers import FORMATS, KEY
from conversation_codec import ConversationCodec, EncodeError, FormatMismatchError, TornTailWarning
from cryptography.fernet import Fernet
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule


def codec_at(path: Path, options: dict[str, Any], **extra: Any) -> ConversationCodec:
    return ConversationCodec(path, **options, **extra)


def message(i: int, size: int = 40) -> dict[str, Any]:
    return {"role": ("user", "assistant")[i % 2], "content": f"message {i} " + "é" * (i % size), "i": i}


def idx(path: Path) -> Path:
    return path.with_name(path.name + ".idx")


def test_append_to_a_missing_file_creates_it_private(tmp_path: Path, options: dict[str, Any]) -> None:
    path = tmp_path / "new" / "c.jsonl"
    codec = codec_at(path, options)
    codec.append_turn(message(0))
    assert codec.load() == [message(0)]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(codec) == 1


def test_save_then_appends_then_every_view_agrees(tmp_path: Path, options: dict[str, Any]) -> None:
    codec = codec_at(tmp_path / "c.jsonl", options, durable=False)
    expected = [message(i) for i in range(40000)]  # several frames, in every format (gzip: 1 MiB each)
    codec.save(expected)
    assert idx(codec.path).exists()
    for i in range(40000, 40020):
        codec.append_turn(message(i))
        expected.append(message(i))
    codec.append_turn([message(7000), message(7001)])
    expected += [message(7000), message(7001)]
    fresh = codec_at(codec.path, options)
    assert fresh.load() == expected
    assert len(fresh) == len(expected)
    assert list(fresh.iter()) == expected
    assert list(fresh) == expected
    for n in [0, 1, 2, 3, 21, 22, 23, 500, 39999, len(expected), len(expected) + 10]:
        assert fresh.load(last=n) == (expected[-n:] if n else []), n


def test_a_list_is_one_turn_of_several_messages(tmp_path: Path, options: dict[str, Any]) -> None:
    codec = codec_at(tmp_path / "c.jsonl", options)
    codec.append_turn([[1, 2], "x"])  # two messages: the JSON array [1, 2] and the string "x"
    codec.append_turn([[3, 4]])  # one message that is an array
    codec.append_turn([])  # nothing
    assert codec.load() == [[1, 2], "x", [3, 4]]


def test_append_runs_redact_once_per_message(tmp_path: Path, options: dict[str, Any]) -> None:
    seen = []

    def redact(m: dict[str, Any]) -> dict[str, Any]:
        seen.append(m["i"])
        return {**m, "content": "[redacted]"}

    codec = codec_at(tmp_path / "c.jsonl", options, redact=redact)
    codec.append_turn([message(1), message(2)])
    assert seen == [1, 2]
    assert [m["content"] for m in codec.load()] == ["[redacted]"] * 2
    assert b"message 1" not in codec.path.read_bytes()


def test_a_turn_that_cannot_be_encoded_writes_nothing(tmp_path: Path, options: dict[str, Any]) -> None:
    codec = codec_at(tmp_path / "c.jsonl", options)
    codec.append_turn(message(0))
    codec.append_turn(message(1))
    before = codec.path.read_bytes(), idx(codec.path).read_bytes()
    with pytest.raises(EncodeError, match=r'messages\[1\]\["data"\]'):
        codec.append_turn([message(2), {"data": b"bytes"}])
    assert (codec.path.read_bytes(), idx(codec.path).read_bytes()) == before


@pytest.mark.parametrize(
    ("written_with", "appended_with"),
    [(a, b) for a in ("plain", "gzip", "fernet") for b in ("plain", "gzip", "fernet") if a != b],
)
def test_appending_with_other_options_raises_and_writes_nothing(
    tmp_path: Path, written_with: str, appended_with: str
) -> None:
    path = tmp_path / "c.jsonl"
    codec_at(path, FORMATS[written_with]).save([message(0)])
    before = path.read_bytes()
    with pytest.raises(FormatMismatchError, match=f"the file is {written_with}"):
        codec_at(path, FORMATS[appended_with]).append_turn(message(1))
    assert path.read_bytes() == before


def test_an_encrypted_empty_conversation_still_refuses_plain_appends(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    ConversationCodec(path, fernet_key=KEY).save([])
    with pytest.raises(FormatMismatchError):
        ConversationCodec(path).append_turn(message(0))


@pytest.mark.parametrize("last", [-1, 1.5, True, "3"])
def test_load_last_must_be_a_count(tmp_path: Path, last: Any) -> None:
    with pytest.raises(ValueError, match="last must be"):
        ConversationCodec(tmp_path / "c.jsonl").load(last=last)


def test_missing_file_has_no_messages(tmp_path: Path, options: dict[str, Any]) -> None:
    codec = codec_at(tmp_path / "c.jsonl", options)
    assert (len(codec), codec.load(last=5), list(codec.iter())) == (0, [], [])


# ---------------------------------------------------------------------------------- the index is a cache


def build(path: Path, options: dict[str, Any]) -> list[dict[str, Any]]:
    codec = codec_at(path, options, durable=False)
    expected = [message(i) for i in range(3000)]
    codec.save(expected)
    for i in range(3000, 3030):
        codec.append_turn(message(i))
        expected.append(message(i))
    return expected


def check_views(path: Path, options: dict[str, Any], expected: list[dict[str, Any]]) -> None:
    codec = codec_at(path, options)
    assert len(codec) == len(expected)
    for n in (1, 7, 30, 31, 100, len(expected)):
        assert codec.load(last=n) == expected[-n:]
    assert codec.load() == expected


def test_deleted_index_changes_nothing_and_is_rebuilt(tmp_path: Path, options: dict[str, Any]) -> None:
    path = tmp_path / "c.jsonl"
    expected = build(path, options)
    idx(path).unlink()
    check_views(path, options, expected)
    assert not idx(path).exists()  # readers never write: the next writer rebuilds it
    codec_at(path, options).append_turn(message(1))
    assert idx(path).exists()
    check_views(path, options, [*expected, message(1)])


@pytest.mark.parametrize("keep", [0, 5, 31, 32, 33, 100, 1000])
def test_truncated_index_changes_nothing(tmp_path: Path, options: dict[str, Any], keep: int) -> None:
    path = tmp_path / "c.jsonl"
    expected = build(path, options)
    with open(idx(path), "r+b") as f:
        f.truncate(keep)
    check_views(path, options, expected)


@pytest.mark.parametrize("seed", range(12))
def test_scribbled_index_changes_nothing(tmp_path: Path, options: dict[str, Any], seed: int) -> None:
    path = tmp_path / "c.jsonl"
    expected = build(path, options)
    data = bytearray(idx(path).read_bytes())
    rng = random.Random(seed)
    for _ in range(rng.choice([1, 3, 50])):
        data[rng.randrange(len(data))] = rng.randrange(256)
    idx(path).write_bytes(bytes(data))
    check_views(path, options, expected)


def test_an_index_of_another_conversation_is_not_trusted(tmp_path: Path, options: dict[str, Any]) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    expected = build(a, options)
    codec_at(b, options).save([message(i) for i in range(40000)])  # several frames in every format
    idx(a).write_bytes(idx(b).read_bytes())
    check_views(a, options, expected)


def test_a_stale_index_after_appends_by_a_process_without_it(tmp_path: Path, options: dict[str, Any]) -> None:
    path = tmp_path / "c.jsonl"
    expected = build(path, options)
    stale = idx(path).read_bytes()
    for i in range(5):
        codec_at(path, options).append_turn(message(100 + i))
        expected.append(message(100 + i))
    idx(path).write_bytes(stale)  # as if those appends had died before adding their records
    check_views(path, options, expected)


def test_a_save_replaces_the_index_of_the_old_conversation(tmp_path: Path, options: dict[str, Any]) -> None:
    path = tmp_path / "c.jsonl"
    build(path, options)
    old_index = idx(path).read_bytes()
    codec = codec_at(path, options)
    codec.save([message(1), message(2)])  # one frame: no index needed
    assert not idx(path).exists()
    idx(path).write_bytes(old_index)  # a stale index put back must be recognised as another file's
    assert len(codec) == 2
    assert codec.load(last=1) == [message(2)]


# ---------------------------------------------------------------------------------- crashes and concurrency


def test_a_torn_append_is_moved_aside_by_the_next_append(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    codec = ConversationCodec(path)
    codec.append_turn([message(0), message(1)])
    with open(path, "ab") as f:
        f.write(b'{"role": "user", "content": "cut sh')  # a crash in the middle of an append
    with pytest.warns(TornTailWarning, match="from byte"):
        assert codec.load() == [message(0), message(1)]  # what was acknowledged, and a warning
    codec.append_turn(message(2))
    assert codec.load() == [message(0), message(1), message(2)]
    assert len(codec) == 3
    torn = [p for p in tmp_path.iterdir() if ".torn-" in p.name]
    assert [p.read_bytes() for p in torn] == [b'{"role": "user", "content": "cut sh']


def test_a_torn_turn_of_several_messages_is_moved_aside_whole(tmp_path: Path) -> None:
    # A turn lands whole or not at all: a crash that persisted the first line of a two-message turn must not
    # leave that message behind.
    path = tmp_path / "c.jsonl"
    codec = ConversationCodec(path)
    codec.append_turn([message(0), message(1)])
    torn = b'{"role": "user", "content": "first of two"}\t\n{"role": "assistant", "con'
    with open(path, "ab") as f:
        f.write(torn)
    codec.append_turn(message(2))
    assert codec.load() == [message(0), message(1), message(2)]
    assert [p.read_bytes() for p in tmp_path.iterdir() if ".torn-" in p.name] == [torn]


def test_a_last_line_without_newline_written_by_hand_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"a": 1}\n{"b": 2}')
    codec = ConversationCodec(path)
    codec.append_turn({"c": 3})
    assert codec.load() == [{"a": 1}, {"b": 2}, {"c": 3}]
    assert not [p for p in tmp_path.iterdir() if ".torn-" in p.name]


def test_a_torn_encrypted_append_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    codec = ConversationCodec(path, fernet_key=KEY)
    codec.append_turn(message(0))
    whole = Fernet(KEY).encrypt(b'{"x": 1}\n')
    with open(path, "ab") as f:
        f.write(whole[: len(whole) // 2])
    codec.append_turn(message(1))
    assert codec.load() == [message(0), message(1)]


def test_concurrent_appends_from_processes_all_land_once(tmp_path: Path, options: dict[str, Any]) -> None:
    path = tmp_path / "c.jsonl"
    key = options.get("fernet_key")
    script = textwrap.dedent(
        f"""
        import sys
        from conversation_codec import ConversationCodec
        codec = ConversationCodec({str(path)!r}, fernet_key={key!r}, durable=False)
        for i in range(40):
            codec.append_turn([{{"w": int(sys.argv[1]), "i": i}}, {{"w": int(sys.argv[1]), "i": i, "second": True}}])
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(w)]) for w in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 4
    codec = codec_at(path, options)
    messages = codec.load()
    assert len(messages) == len(codec) == 4 * 40 * 2
    for w in range(4):
        mine = [(m["i"], "second" in m) for m in messages if m["w"] == w]
        assert mine == [(i, s) for i in range(40) for s in (False, True)]  # in order, each turn whole
    assert codec.load(last=3) == messages[-3:]


# ---------------------------------------------------------------------------------- a stateful model

small_messages = st.one_of(
    st.dictionaries(st.sampled_from(["role", "content", "n"]), st.text(max_size=30) | st.integers(), max_size=3),
    st.text(max_size=20),
    st.integers(),
    st.none(),
)


class ConversationModel(RuleBasedStateMachine):
    """A list in memory against the file: saves, appends, tail loads, len and iter, in one format."""

    options: ClassVar[dict[str, Any]] = {}

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(__import__("tempfile").mkdtemp())
        self.path = self.dir / "c.jsonl"
        self.model: list[Any] = []

    def codec(self) -> ConversationCodec:
        return ConversationCodec(self.path, **self.options, durable=False)

    @rule(messages=st.lists(small_messages, max_size=30), big=st.booleans())
    def save(self, messages: list[Any], big: bool) -> None:
        if big:  # enough to make several frames and an index
            messages = messages + [{"pad": "p" * 1000, "n": i} for i in range(300)]
        self.codec().save(iter(messages))
        self.model = list(messages)

    @rule(message=small_messages)
    def append_one(self, message: Any) -> None:
        if isinstance(message, list):
            message = [message]
        self.codec().append_turn(message)
        self.model.append(message)

    @rule(messages=st.lists(small_messages, max_size=4))
    def append_list(self, messages: list[Any]) -> None:
        self.codec().append_turn(messages)
        self.model.extend(messages)

    @precondition(lambda self: self.path.exists())
    @rule(damage=st.sampled_from(["delete", "truncate", "scribble"]))
    def damage_index(self, damage: str) -> None:
        index = idx(self.path)
        if not index.exists():
            return
        if damage == "delete":
            index.unlink()
        elif damage == "truncate":
            index.write_bytes(index.read_bytes()[: len(index.read_bytes()) // 2])
        else:
            data = bytearray(index.read_bytes())
            data[len(data) // 3] ^= 0x55
            index.write_bytes(bytes(data))

    @rule(n=st.integers(min_value=0, max_value=400))
    def tail(self, n: int) -> None:
        assert self.codec().load(last=n) == (self.model[-n:] if n else [])

    @invariant()
    def same_length_and_content(self) -> None:
        codec = self.codec()
        assert len(codec) == len(self.model)
        assert list(codec.iter()) == self.model

    def teardown(self) -> None:
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


class PlainModel(ConversationModel):
    options: ClassVar[dict[str, Any]] = {}


class FernetModel(ConversationModel):
    options: ClassVar[dict[str, Any]] = {"fernet_key": KEY}


class GzipModel(ConversationModel):
    options: ClassVar[dict[str, Any]] = {"compressed": True}


class GzipFernetModel(ConversationModel):
    options: ClassVar[dict[str, Any]] = {"compressed": True, "fernet_key": KEY}


model_settings = settings(
    max_examples=25, stateful_step_count=15, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestPlainModel = PlainModel.TestCase
TestPlainModel.settings = model_settings
TestFernetModel = FernetModel.TestCase
TestFernetModel.settings = model_settings
TestGzipModel = GzipModel.TestCase
TestGzipModel.settings = model_settings
TestGzipFernetModel = GzipFernetModel.TestCase
TestGzipFernetModel.settings = model_settings


# ---------------------------------------------------------------------------------- gzip


def test_gzip_files_are_standard_multi_member_gzip(tmp_path: Path) -> None:
    import gzip
    import json
    import shutil

    path = tmp_path / "c.jsonl.gz"
    codec = ConversationCodec(path, compressed=True)
    expected = [message(i) for i in range(20000)]  # several 1 MiB blocks
    codec.save(expected)
    codec.append_turn(message(1))
    expected.append(message(1))
    with gzip.open(path, "rt", encoding="utf-8") as f:
        assert [json.loads(line) for line in f] == expected
    if shutil.which("gzip"):
        out = subprocess.run(["gzip", "-dc", str(path)], capture_output=True, check=True).stdout
        assert [json.loads(line) for line in out.splitlines()] == expected


def test_gzip_written_by_other_tools_loads_and_appends(tmp_path: Path) -> None:
    import gzip

    path = tmp_path / "c.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"a": 1}\n{"b": 2}\n') + gzip.compress(b'{"c": 3}\n'))
    codec = ConversationCodec(path, compressed=True)
    assert codec.load() == [{"a": 1}, {"b": 2}, {"c": 3}]
    assert len(codec) == 3
    codec.append_turn({"d": 4})
    assert codec.load(last=2) == [{"c": 3}, {"d": 4}]
    assert list(codec) == [{"a": 1}, {"b": 2}, {"c": 3}, {"d": 4}]


def test_gzip_compression_is_about_zlibs(tmp_path: Path) -> None:
    import gzip

    expected = [message(i, size=400) for i in range(30000)]
    codec = ConversationCodec(tmp_path / "c.gz", compressed=True)
    codec.save(expected)
    jsonl = b"".join(bytes(__import__("conversation_codec")._core.encode_lines([m])) for m in expected)
    assert os.path.getsize(codec.path) <= 1.03 * len(gzip.compress(jsonl, 6))


def test_a_torn_gzip_append_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "c.gz"
    codec = ConversationCodec(path, compressed=True)
    codec.append_turn([message(0), message(1)])
    whole = path.read_bytes()
    codec.append_turn(message(2))
    member = path.read_bytes()[len(whole) :]
    with open(path, "r+b") as f:  # the last append cut short by a crash
        f.truncate(len(whole) + len(member) // 2)
    with pytest.warns(TornTailWarning):
        assert codec.load() == [message(0), message(1)]
    codec.append_turn(message(3))
    assert codec.load() == [message(0), message(1), message(3)]
    assert [p.read_bytes() for p in tmp_path.iterdir() if ".torn-" in p.name] == [member[: len(member) // 2]]


@pytest.mark.parametrize("level", [-1, 13, 2.5, True])
def test_compression_level_is_checked(tmp_path: Path, level: Any) -> None:
    with pytest.raises((ValueError, TypeError), match="compression_level"):
        ConversationCodec(tmp_path / "c", compressed=True, compression_level=level)
